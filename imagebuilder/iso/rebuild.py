"""Rebuild path for ISOs without CoreOS embed areas (any bootable ISO: grub-mkrescue,
ISOLINUX, iPXE, distro installers).

Embed areas let ``iso customize`` patch a CoreOS ISO in place; other ISOs have nowhere to
put things, so changes need a new ISO 9660 filesystem. We let xorriso write it
rootlessly from the old one (the lorax ``mkksiso`` approach)::

    xorriso -indev SRC -outdev DEST -boot_image any replay \\
            -update EDITED.cfg /path.cfg -map ADDED /dest ...

``-boot_image any replay`` re-creates the El Torito catalog (BIOS and EFI entries) and the
System Area (isohybrid MBR, grub2 MBR, GPT / protective MBR) the source had, so the result
still boots as a CD *and* as a hybrid disk. Kernel-argument edits go into every kernel
command line of the boot configs (GRUB ``linux``/``linuxefi``, ISOLINUX/SYSLINUX
``append``), extracted with ``xorriso -osirrox on -extract`` and mapped back. The output is
reproducible: every date is pinned to ``source_date_epoch`` (default: ``SOURCE_DATE_EPOCH``,
else the source's volume modification date), added files are owned by 0:0, so two runs give
the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ToolError, UserInputError
from ..fsutil import check_output_target, temp_path_in
from ..run import require, run

# boot configs we edit kernel lines in (basename patterns)
_CONFIG_NAME = re.compile(r"(?i)^(grub\.cfg|loopback\.cfg|[a-z0-9_.-]*\.cfg|[a-z0-9_.-]*\.conf)$")
_SYSLINUX_NAME = re.compile(r"(?i)(^|/)(isolinux|syslinux|extlinux)(/|\.cfg$|\.conf$)")
_GRUB_KERNEL = re.compile(r"^(?P<lead>\s*(?:linux|linuxefi)\s+)(?P<kernel>\S+)(?P<args>[^\n]*)$")
_SYSLINUX_APPEND = re.compile(r"(?i)^(?P<lead>\s*append)(?P<args>(?:\s[^\n]*)?)$")
_SYSLINUX_LABEL = re.compile(r"(?i)^\s*label\b")
_SYSLINUX_KERNEL = re.compile(r"(?i)^(?P<indent>\s*)(?:kernel|linux)\s+\S+")
MAX_CONFIG_SIZE = 1 << 20


@dataclasses.dataclass
class RebuildReport:
    """What ``rebuild_iso`` changed."""

    output: str
    edited_configs: list[str]
    added_files: list[str]
    kernel_lines: int
    volume_id: str
    source_date_epoch: int
    boot_images: list[str]
    duration: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- ISO facts

def volume_id(path: str | os.PathLike[str]) -> str:
    from .iso9660 import open_iso

    with open_iso(path) as fs:
        return fs.volume_id


_volume_id_of = volume_id  # (rebuild_iso has a parameter of that name)


def has_joliet(path: str | os.PathLike[str]) -> bool:
    """A supplementary volume descriptor with a Joliet escape sequence (%/@, %/C, %/E)."""
    from .iso9660 import open_iso

    with open_iso(path) as fs:
        return fs.has_joliet


def _epoch(src: Path, source_date_epoch: int | None) -> int:
    if source_date_epoch is not None:
        return int(source_date_epoch)
    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env:
        if not env.isdigit():
            raise UserInputError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds")
        return int(env)
    from .iso9660 import open_iso

    with open_iso(src) as fs:
        return fs.volume_epoch or 0


def iso9660_name_args(path: Path) -> list[str]:
    """``-compliance`` settings that give the rebuilt ECMA-119 (plain ISO 9660) names the
    form the source's have.

    Native xorriso would write level-2 names (``KARGS.JSON``) where mkisofs-made sources
    have 8.3 names (``KARGS.JSO``), and readers that ignore Rock Ridge (coreos-installer's
    ISO 9660 parser, firmware) look files up by those names.
    """
    from .iso9660 import open_iso

    def is_83(name: str, is_dir: bool) -> bool:
        base, dot, ext = name.partition(".")
        if is_dir:
            return not dot and len(base) <= 8
        return len(base) <= 8 and len(ext) <= 3 and "." not in ext

    longest, all_83, big = 0, True, False
    with open_iso(path) as fs:
        for p, e in fs.walk():
            name = p.rsplit("/", 1)[-1]
            longest = max(longest, len(name))
            all_83 = all_83 and is_83(name, e.is_dir)
            big = big or (not e.is_dir and e.size >= (4 << 30) - 1)
    if big:
        level = "3"
    else:
        level = "1" if all_83 else "2"
    rules = [f"iso_9660_level={level}"]
    if longest > 32:
        rules.append("long_names")
    return ["-compliance", ":".join(rules)]


def _xorriso_quote_unescape(line: str) -> str | None:
    """xorriso -find prints paths single-quoted, with ' as '"'"'."""
    line = line.strip()
    if not (line.startswith("'") and line.endswith("'")):
        return None
    return line[1:-1].replace("'\"'\"'", "'")


def list_files(iso: Path) -> list[str]:
    res = run(["xorriso", "-no_rc", "-indev", str(iso), "-find", "/", "-type", "f", "--"], text=True)
    return [p for p in (_xorriso_quote_unescape(ln) for ln in res.stdout.splitlines()) if p]


def boot_images(iso: Path) -> list[str]:
    """El Torito boot image paths, as ``-report_el_torito plain`` lists them."""
    res = run(["xorriso", "-no_rc", "-indev", str(iso), "-report_el_torito", "plain"], text=True)
    out = []
    for ln in res.stdout.splitlines():
        m = re.match(r"El Torito img path\s*:\s*\d+\s+(\S.*)$", ln)
        if m:
            out.append(m.group(1).strip())
    return out


def system_area(iso: Path) -> str:
    res = run(["xorriso", "-no_rc", "-indev", str(iso), "-report_system_area", "plain"], text=True)
    m = re.search(r"System area summary:\s*(.*)", res.stdout)
    return m.group(1).strip() if m else ""


# --------------------------------------------------------------------------- karg edits

def _is_syslinux(path: str, text: str) -> bool:
    if _SYSLINUX_NAME.search(path):
        return True
    return bool(re.search(r"(?im)^\s*label\s", text)) and "menuentry" not in text


def edit_kernel_lines(path: str, text: str, append: Sequence[str],
                      delete: Sequence[str]) -> tuple[str, int]:
    """Apply karg edits to every kernel command line of one boot config.

    Arguments go through the karg model (:mod:`imagebuilder.kargs`): each is validated,
    appended only if not present yet, and written quoted for its parser (GRUB script
    words are single-quoted when they are not plain). Returns (new text, number of kernel
    lines edited). ISOLINUX labels that have a ``kernel``/``linux`` line but no ``append``
    get one (when appending).
    """
    from ..kargs import KernelArgs
    from .kargs import edit_line

    add = KernelArgs.from_items(append, "--karg-append")
    drop = KernelArgs.from_items(delete, "--karg-delete")
    lines = text.split("\n")
    n = 0
    if _is_syslinux(path, text):
        out: list[str] = []
        # a label block runs from one 'label' line to the next
        blocks: list[list[str]] = [[]]
        for ln in lines:
            if _SYSLINUX_LABEL.match(ln):
                blocks.append([])
            blocks[-1].append(ln)
        for bi, block in enumerate(blocks):
            has_append = any(_SYSLINUX_APPEND.match(ln) for ln in block)
            for ln in block:
                m = _SYSLINUX_APPEND.match(ln)
                if m:
                    new = edit_line(m.group("args"), add, drop, grub=False, source=path)
                    out.append(f"{m.group('lead')} {new}".rstrip() if new else m.group("lead"))
                    n += 1
                    continue
                out.append(ln)
                k = _SYSLINUX_KERNEL.match(ln)
                if k and bi > 0 and not has_append and add:
                    out.append(f"{k.group('indent')}append "
                               + edit_line("", add, drop, grub=False, source=path))
                    n += 1
        return "\n".join(out), n
    out = []
    for ln in lines:
        m = _GRUB_KERNEL.match(ln)
        if m:
            new = edit_line(m.group("args"), add, drop, grub=True, source=path)
            out.append(f"{m.group('lead')}{m.group('kernel')}" + (f" {new}" if new else ""))
            n += 1
        else:
            out.append(ln)
    return "\n".join(out), n


_VOLID = re.compile(r"[A-Za-z0-9 ._+-]{1,32}")


def check_volume_id(volume_id: str) -> None:
    """A new volume ID: 1 to 32 of A-Z a-z 0-9 space . _ + - (it is written into the boot
    configs, where anything else could change their meaning)."""
    if not _VOLID.fullmatch(volume_id) or volume_id.strip() != volume_id:
        raise UserInputError(f"--volume-id {volume_id!r}: must be 1 to 32 characters of "
                             "A-Z a-z 0-9 space . _ + - (no leading or trailing space)")


def _replace_volid(text: str, old: str, new: str) -> str:
    if not old or old == new:
        return text
    out = re.sub(rf"(?<![A-Za-z0-9_.-]){re.escape(old)}(?![A-Za-z0-9_.-])", lambda _m: new, text)
    esc_old, esc_new = old.replace(" ", "\\x20"), new.replace(" ", "\\x20")
    if esc_old != old:
        out = out.replace(esc_old, esc_new)
    return out


# --------------------------------------------------------------------------- rebuild

def _check_iso_path(dest: str) -> str:
    if not dest or "\0" in dest:
        raise UserInputError(f"invalid ISO path {dest!r}")
    p = "/" + dest.strip("/")
    if p == "/" or any(part in (".", "..") for part in p.split("/")[1:]):
        raise UserInputError(f"invalid ISO path {dest!r}", hint="give an absolute path like /extra/file.txt")
    return p


def parse_add_file(spec: str) -> tuple[str, str]:
    """``SRC:DEST`` (DEST = path inside the ISO) -> (SRC, DEST)."""
    src, sep, dest = spec.rpartition(":")
    if not sep or not src or not dest:
        raise UserInputError(f"--add-file {spec!r}: expected SRC:DEST (DEST is the path in the ISO)")
    return src, _check_iso_path(dest)


def rebuild_iso(src: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                add_files: Iterable[tuple[str | os.PathLike[str], str]] = (),
                karg_append: Sequence[str] = (), karg_delete: Sequence[str] = (),
                volume_id: str | None = None, source_date_epoch: int | None = None,
                force: bool = False) -> RebuildReport:
    """Write a new ISO ``dest`` from ``src`` with files added/replaced and kargs edited.

    ``add_files``: ``(local path, ISO path)`` pairs; an existing ISO file is replaced,
    a directory is added recursively. ``karg_append``/``karg_delete``: applied to every
    kernel command line in the GRUB / ISOLINUX configs (delete first; a bare ``name``
    deletes every ``name``/``name=*``). ``volume_id``: new volume ID (occurrences of the
    old one in the boot configs are rewritten too, like mkksiso). The output is written
    atomically and is byte-reproducible for the same inputs and ``source_date_epoch``.
    """
    t0 = time.monotonic()
    require("xorriso")
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise UserInputError(f"{src}: ISO not found")
    if dest.resolve() == src.resolve():
        raise UserInputError("the rebuilt ISO must go to a new file (-o OUT), not over its source")
    old_volid = _volume_id_of(src)
    if volume_id is not None:
        check_volume_id(volume_id)
    from ..kargs import KernelArgs

    KernelArgs.from_items(karg_append, "--karg-append")  # refuses malformed arguments early
    KernelArgs.from_items(karg_delete, "--karg-delete")
    adds: list[tuple[Path, str]] = []
    for s, d in add_files:
        sp = Path(s)
        if not sp.exists():
            raise UserInputError(f"{s}: file to add not found")
        adds.append((sp.resolve(), _check_iso_path(str(d))))
    epoch = _epoch(src, source_date_epoch)
    files = list_files(src)
    original_boot = boot_images(src)
    added_paths = {d for _s, d in adds}

    edited: dict[str, Path] = {}
    kernel_lines = 0
    with tempfile.TemporaryDirectory(prefix="imagebuilder-rebuild-") as td:
        tdp = Path(td)
        want_edit = bool(karg_append or karg_delete or (volume_id and volume_id != old_volid))
        configs = [p for p in files if _CONFIG_NAME.match(p.rsplit("/", 1)[-1])
                   and p not in added_paths]
        if karg_append or karg_delete:
            if "/coreos/kargs.json" in files:
                raise UserInputError(
                    f"{src}: this ISO has CoreOS kargs embed areas; editing its configs would "
                    "break them", hint="use `imagebuilder iso customize --live-karg-*` or "
                                       "`iso kargs modify` instead")
        if want_edit and configs:
            cmd = ["xorriso", "-no_rc", "-osirrox", "on", "-indev", str(src)]
            for i, p in enumerate(configs):
                cmd += ["-extract", p, str(tdp / f"cfg{i}")]
            run(cmd)
            for i, p in enumerate(configs):
                local = tdp / f"cfg{i}"
                if not local.is_file() or local.stat().st_size > MAX_CONFIG_SIZE:
                    continue
                raw = local.read_bytes()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                new = text
                if karg_append or karg_delete:
                    new, n = edit_kernel_lines(p, new, karg_append, karg_delete)
                    kernel_lines += n
                if volume_id:
                    new = _replace_volid(new, old_volid, volume_id)
                if new != text:
                    out = tdp / f"edited{i}"
                    out.write_text(new)
                    edited[p] = out
        if (karg_append or karg_delete) and kernel_lines == 0:
            raise UserInputError(f"{src}: no kernel command lines found in its boot configs",
                                 hint="looked for GRUB linux/linuxefi and ISOLINUX append lines in "
                                      + (", ".join(configs) or "(no *.cfg files)"))
        with temp_path_in(dest, force=force) as tmp:
            tmp.unlink()  # xorriso creates the output itself
            cmd = ["xorriso", "-no_rc", "-abort_on", "FAILURE", "-report_about", "SORRY",
                   "-indev", str(src), "-outdev", str(tmp), "-boot_image", "any", "replay"]
            if has_joliet(src):
                cmd += ["-joliet", "on"]
            cmd += iso9660_name_args(src)
            if volume_id is not None:
                cmd += ["-volid", volume_id]
            touched: list[str] = []
            for p, local in sorted(edited.items()):
                cmd += ["-update", str(local), p]
                touched.append(p)
            for s, d in adds:
                cmd += ["-map", str(s), d]
                touched.append(d)
            for p in touched:
                cmd += ["-chown_r", "0", p, "--", "-chgrp_r", "0", p, "--",
                        "-chmod_r", "go-w,a+r", p, "--",
                        "-alter_date_r", "b", f"={epoch}", p, "--",
                        "-alter_date_r", "c", f"={epoch}", p, "--"]
            cmd += ["-volume_date", "uuid", time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch)),
                    "-volume_date", "all_file_dates", "set_to_mtime"]
            for kind in ("c", "m"):
                cmd += ["-volume_date", kind, f"={epoch}"]
            run(cmd, env={"SOURCE_DATE_EPOCH": str(epoch)})
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise ToolError("xorriso wrote no output ISO", argv=cmd)
            new_boot = boot_images(tmp)
            if sorted(new_boot) != sorted(original_boot):
                raise ToolError(f"rebuilt ISO lost El Torito boot images: had {original_boot}, "
                                f"now {new_boot}", argv=cmd)
            out_volid = _volume_id_of(tmp)
    return RebuildReport(output=str(dest), edited_configs=sorted(edited), added_files=sorted(added_paths),
                         kernel_lines=kernel_lines, volume_id=out_volid, source_date_epoch=epoch,
                         boot_images=original_boot, duration=time.monotonic() - t0)


def has_embed_areas(path: str | os.PathLike[str]) -> bool:
    """Does the ISO carry CoreOS embed areas (igninfo.json / ignition.img / kargs.json)?"""
    from .areas import has_embed_areas as _has
    from .iso9660 import open_iso

    with open_iso(path) as fs:
        return _has(fs)


def customize_rebuild(input_iso: str | os.PathLike[str], output: str | None, force: bool = False, *,
                      add_file: Sequence[str] = (), karg_append: Sequence[str] = (),
                      karg_delete: Sequence[str] = (), volume_id: str | None = None,
                      embed=None, notes=None) -> RebuildReport:
    """``iso customize`` with rebuild options (``--add-file SRC:DEST``, ``--karg-append``,
    ``--karg-delete``, ``--volume-id``).

    ISO without CoreOS embed areas: a rebuild (nothing else can be customized there).
    CoreOS ISO: ``--add-file`` is allowed; the embed-area customizations in ``embed`` (an
    ``iso.customize.Customizations``) are applied first, then the files are added by a
    rebuild (embed areas are file-relative, so they stay valid). Kargs and the volume ID of
    a CoreOS ISO are left to the embed areas (``--live-karg-*``; the volume ID is what
    ``coreos.liveiso=`` finds the ISO by).
    """
    src = Path(input_iso)
    if not src.is_file():
        raise UserInputError(f"{src}: ISO not found")
    if output is None or output == "-":
        raise UserInputError("--add-file/--karg-append/--karg-delete/--volume-id rebuild the ISO: "
                             "give -o OUT", hint="the rebuild writes a new ISO; it cannot patch in "
                                                  "place or stream to stdout")
    adds = [parse_add_file(spec) for spec in add_file]
    embed_changes = embed is not None and (embed.has_initrd_changes or embed.has_live_kargs)
    if not has_embed_areas(src):
        if embed_changes:
            raise UserInputError(
                f"{src}: no CoreOS embed areas, so only --add-file, --karg-append, "
                "--karg-delete and --volume-id can customize it (by rebuilding it)")
        return rebuild_iso(src, output, add_files=adds, karg_append=karg_append,
                           karg_delete=karg_delete, volume_id=volume_id, force=force)
    if karg_append or karg_delete:
        raise UserInputError(f"{src}: a CoreOS live ISO keeps its kernel arguments in embed areas",
                             hint="use --live-karg-append / --live-karg-delete")
    if volume_id is not None:
        raise UserInputError(f"{src}: refusing to change a CoreOS live ISO's volume ID "
                             "(coreos.liveiso= finds the ISO by it)")
    if not embed_changes:
        return rebuild_iso(src, output, add_files=adds, force=force)
    from .customize import customize_iso
    from .image import IsoImage
    from .write import write_result

    dest = Path(output)
    parent = check_output_target(dest, force=force)
    with tempfile.TemporaryDirectory(prefix=".imagebuilder-customize-", dir=parent) as td:
        staged = Path(td) / "customized.iso"
        with IsoImage.open(src) as iso:
            customize_iso(iso, embed, force=force, notes=notes or (lambda _m: None))
            write_result(iso, iso.patches(), str(staged), True)
        return rebuild_iso(staged, dest, add_files=adds, force=force,
                           source_date_epoch=_epoch(src, None))


__all__ = ["rebuild_iso", "customize_rebuild", "RebuildReport", "parse_add_file", "has_embed_areas", "edit_kernel_lines",
           "boot_images", "system_area", "list_files", "volume_id", "has_joliet"]
