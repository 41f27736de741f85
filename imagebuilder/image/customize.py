"""``imagebuilder customize-image``: Ignition config, kernel arguments, platform and the
first-boot stamp of an existing FCOS-layout disk image.

The image needs a GPT with an ext4 filesystem labelled ``boot`` holding BLS entries
(``loader/entries/*.conf``, ``loader`` may be ostree's symlink to ``loader.N``). What
changes, all on the boot filesystem:

* ``ignition/config.ign`` (0600 in a 0700 directory): the embedded config, which the
  initramfs hands to Ignition (``35imagebuilder-ignition``, FCOS metal behaviour);
* ``ignition.firstboot``: the stamp that makes GRUB add ``ignition.firstboot``;
* the ``options`` of every BLS entry (``--karg-append/--karg-delete/--platform``), and
  ``grub/grub.cfg`` regenerated from the edited entries when imagebuilder wrote it
  (Debian's GRUB has no blscfg; a blscfg GRUB reads the entries itself).

Raw images are changed with ``debugfs`` on the partition (no mounts, no root). Other
formats (qcow2, vmdk, ...) go through libguestfs. Safety: ``-o`` builds the result in
a temporary file next to OUT and renames it into place (no clobbering without ``-f``);
in place, a raw image's boot partition is copied out, changed and checked (read-back +
``e2fsck -fn``) and only then are the changed blocks written back; other formats are
changed in a copy that atomically replaces the original. On any error the input is
left as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..boot import grub
from ..errors import BadImageError, UserInputError
from ..fsutil import commit_tempfile, temp_path_in
from ..ignition.integration import EMBEDDED_CONFIG, FIRSTBOOT_STAMP, CheckedConfig, check_config
from .disk import (BootPartition, boot_partition_from, copy_sparse, detect_format,
                   find_boot_partition, table_from_reader, write_back)

log = logging.getLogger("imagebuilder.image.customize")

FIRSTBOOT_LITERAL = "$ignition_firstboot"
PLATFORM_KARG = "ignition.platform.id"
GRUB_CFG = "grub/grub.cfg"
KARG_RE = re.compile(r"^\S+$")


class BootFs(Protocol):
    """What customize needs from a filesystem backend (ext4.Ext4Fs, guestfs.GuestFs)."""

    def resolve(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes | None: ...
    def listdir(self, path: str) -> list[Any]: ...
    def write(self, path: str, data: bytes, mode: int = 0o644) -> None: ...
    def remove(self, path: str) -> None: ...
    def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    def commit(self) -> None: ...
    def fsck(self) -> None: ...


@dataclass(frozen=True)
class Customization:
    ignition: CheckedConfig | None = None
    ignition_source: str = ""
    karg_append: tuple[str, ...] = ()
    karg_delete: tuple[str, ...] = ()
    platform: str | None = None
    firstboot: bool | None = None  # None: leave as is (set when a config is given)

    def __post_init__(self) -> None:
        for k in (*self.karg_append, *self.karg_delete):
            if not k or not KARG_RE.match(k):
                raise UserInputError(f"kernel argument {k!r}: one argument, no whitespace")
        if self.platform is not None and not re.fullmatch(r"[a-z0-9_-]+", self.platform):
            raise UserInputError(f"--platform {self.platform!r} is not a platform id (e.g. metal, qemu)")

    @property
    def effective_firstboot(self) -> bool | None:
        if self.firstboot is not None:
            return self.firstboot
        return True if self.ignition is not None else None

    @property
    def is_empty(self) -> bool:
        return (self.ignition is None and not self.karg_append and not self.karg_delete
                and self.platform is None and self.firstboot is None)


def load_customization(*, ignition: str | None = None, karg_append: list[str] | None = None,
                       karg_delete: list[str] | None = None, platform: str | None = None,
                       firstboot: bool | None = None) -> Customization:
    """Read and validate everything the user gave before touching any image."""
    checked = None
    if ignition is not None:
        from ..fsutil import read_input

        checked = check_config(read_input(ignition, "Ignition config"), ignition)
    c = Customization(ignition=checked, ignition_source=ignition or "",
                      karg_append=tuple(karg_append or ()), karg_delete=tuple(karg_delete or ()),
                      platform=platform, firstboot=firstboot)
    if c.is_empty:
        raise UserInputError("nothing to change",
                             hint="give --ignition, --karg-append, --karg-delete, --platform "
                                  "or --firstboot/--no-firstboot")
    return c


# --------------------------------------------------------------------------- pure edits


def edit_options(options: str, c: Customization, *, add_firstboot_literal: bool) -> str:
    """New BLS options: deletions, platform, appends (ostree admin kargs semantics:
    --karg-delete KEY removes KEY and KEY=*, KEY=VALUE removes that exact argument;
    --karg-append adds an argument unless it is already there)."""
    args = options.split()
    for d in c.karg_delete:
        if "=" in d:
            args = [a for a in args if a != d]
        else:
            args = [a for a in args if a != d and not a.startswith(d + "=")]
    if c.platform is not None:
        new = f"{PLATFORM_KARG}={c.platform}"
        if any(a.startswith(PLATFORM_KARG + "=") for a in args):
            args = [new if a.startswith(PLATFORM_KARG + "=") else a for a in args]
        else:
            args.append(new)
    for a in c.karg_append:
        if a not in args:
            args.append(a)
    if add_firstboot_literal and FIRSTBOOT_LITERAL not in args:
        args.append(FIRSTBOOT_LITERAL)
    return " ".join(args)


def replace_options(text: str, new: str) -> str:
    """The BLS entry text with its ``options`` line(s) replaced by one line."""
    out: list[str] = []
    done = False
    for line in text.splitlines():
        if line.strip().split(" ", 1)[0] == "options":
            if not done:
                out.append(f"options {new}")
                done = True
            continue
        out.append(line)
    if not done:
        out.append(f"options {new}")
    return "\n".join(out) + "\n"


def bls_options(text: str) -> str:
    opts = []
    for line in text.splitlines():
        k, _, v = line.strip().partition(" ")
        if k == "options":
            opts.append(v.strip())
    return " ".join(opts)


@dataclass(frozen=True)
class GrubSettings:
    serial: grub.SerialConfig | None
    terminals: tuple[str, ...]
    timeout: int
    network_kargs: str


def grub_settings(cfg: str) -> GrubSettings | None:
    """Settings of a grub.cfg that imagebuilder generated (None: someone else's grub.cfg)."""
    if not cfg.startswith("# Generated by imagebuilder"):
        return None
    serial = None
    m = re.search(r"^serial --unit=(\d+) --speed=(\d+) --word=(\d+) --parity=(\w+) --stop=(\d+)$",
                  cfg, re.M)
    if m:
        serial = grub.SerialConfig(unit=int(m[1]), speed=int(m[2]), word=int(m[3]),
                                   parity=m[4], stop=int(m[5]))
    t = re.search(r"^terminal_output (.+)$", cfg, re.M)
    terminals = tuple(t[1].split()) if t else ("console",)
    to = re.search(r"^set timeout=(\d+)$", cfg, re.M)
    nk = re.search(r"^\s*set ignition_network_kcmdline=(.*)$", cfg, re.M)
    net = ""
    if nk:
        words = shlex.split(nk[1])
        net = words[0] if words else ""
    return GrubSettings(serial, terminals, int(to[1]) if to else 1, net)


def render_grub(entries: dict[str, str], settings: GrubSettings) -> str:
    """grub.cfg for BLS entry texts {filename: text}, through imagebuilder.boot.grub."""
    with tempfile.TemporaryDirectory(prefix="imagebuilder-bls-") as td:
        parsed = []
        for name, text in entries.items():
            p = Path(td) / name
            p.write_text(text)
            parsed.append(grub.parse_bls(p))
    return grub.render_grub_cfg(grub.sort_entries(parsed), timeout=settings.timeout,
                                serial=settings.serial, terminals=settings.terminals,
                                firstboot_network_kargs=settings.network_kargs)


@dataclass
class ChangeReport:
    image: str = ""
    output: str = ""
    backend: str = ""
    changes: list[str] = field(default_factory=list)
    kargs: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"image": self.image, "output": self.output, "backend": self.backend,
                "changes": self.changes, "kargs": self.kargs, "seconds": round(self.seconds, 2)}


def apply(fs: BootFs, c: Customization, report: ChangeReport) -> None:
    """Queue/apply every change on the boot filesystem ``fs`` (caller commits)."""
    entries_dir = fs.resolve("/loader/entries")
    names = sorted(e.name for e in fs.listdir(entries_dir)
                   if e.name.endswith(".conf") and not e.is_dir)
    if not names:
        raise BadImageError("no BLS entries (loader/entries/*.conf) on the boot partition",
                            hint="customize-image needs an FCOS-layout image (ostree BLS entries)")
    texts: dict[str, str] = {}
    for n in names:
        data = fs.read(f"{entries_dir}/{n}")
        texts[n] = (data or b"").decode(errors="replace")
    fb = c.effective_firstboot
    has_literal = any(FIRSTBOOT_LITERAL in bls_options(t).split() for t in texts.values())
    grub_cfg_raw = fs.read(f"/{GRUB_CFG}")
    grub_cfg = grub_cfg_raw.decode(errors="replace") if grub_cfg_raw is not None else None
    settings = grub_settings(grub_cfg) if grub_cfg is not None else None
    # our grub.cfg expands $ignition_firstboot only where the BLS options carry it
    add_literal = bool(fb) and not has_literal and settings is not None

    new_texts = dict(texts)
    for n, text in texts.items():
        before = bls_options(text)
        after = edit_options(before, c, add_firstboot_literal=add_literal)
        if after != before:
            new_texts[n] = replace_options(text, after)
            fs.write(f"{entries_dir}/{n}", new_texts[n].encode(), 0o644)
            report.kargs[n] = {"before": before, "after": after}
            report.changes.append(f"BLS entry {n}: options changed")
    if report.kargs:
        if settings is not None:
            fs.write(f"/{GRUB_CFG}", render_grub(new_texts, settings).encode(), 0o644)
            report.changes.append(f"/{GRUB_CFG} regenerated from the BLS entries")
        elif grub_cfg is not None:
            report.changes.append(f"/{GRUB_CFG} not written by imagebuilder: left alone "
                                  "(a blscfg GRUB reads the BLS entries)")
    if c.ignition is not None:
        if not fs.exists("/ignition"):
            fs.mkdir("/ignition", 0o700)
        fs.write(f"/{EMBEDDED_CONFIG}", c.ignition.data, 0o600)
        extra = f", translated from spec {c.ignition.downgraded_from}" if c.ignition.downgraded_from else ""
        report.changes.append(f"/{EMBEDDED_CONFIG}: Ignition config from {c.ignition_source} "
                              f"(spec {c.ignition.version}, {len(c.ignition.data)} bytes{extra})")
    if fb is True:
        if not fs.exists(f"/{FIRSTBOOT_STAMP}"):
            fs.write(f"/{FIRSTBOOT_STAMP}", b"", 0o644)
            report.changes.append(f"/{FIRSTBOOT_STAMP}: created (Ignition runs on the next boot)")
        else:
            report.changes.append(f"/{FIRSTBOOT_STAMP}: already present")
        if not has_literal and settings is None:
            report.changes.append(f"warning: no BLS entry has {FIRSTBOOT_LITERAL}; the bootloader "
                                  "must add ignition.firstboot itself (FCOS grub.cfg does)")
    elif fb is False and fs.exists(f"/{FIRSTBOOT_STAMP}"):
        fs.remove(f"/{FIRSTBOOT_STAMP}")
        report.changes.append(f"/{FIRSTBOOT_STAMP}: removed (Ignition will not run)")


# --------------------------------------------------------------------------- backends


def _customize_ext4(image: Path, part: BootPartition, c: Customization, report: ChangeReport) -> None:
    from .ext4 import Ext4Fs

    with Ext4Fs(image, part.offset) as fs:
        apply(fs, c, report)
        fs.commit()
        fs.fsck()


@contextlib.contextmanager
def _partition_copy(image: Path, part: BootPartition) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=f".{image.name}.boot.", suffix=".tmp",
                                dir=image.parent if os.access(image.parent, os.W_OK) else None)
    os.close(fd)
    tmp = Path(name)
    try:
        with open(image, "rb") as src, open(tmp, "r+b") as dst:
            copy_sparse(src, dst, part.offset, part.size, 0)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _customize_raw_in_place(image: Path, c: Customization, report: ChangeReport) -> None:
    part = find_boot_partition(image)
    with _partition_copy(image, part) as copy:
        whole = BootPartition(number=part.number, offset=0, size=part.size, label=part.label)
        _customize_ext4(copy, whole, c, report)
        n = write_back(copy, image, part.offset, part.size)
        log.info("wrote %d changed bytes back into %s", n, image)


def _customize_guestfs(image: Path, fmt: str, c: Customization, report: ChangeReport) -> None:
    from .guestfs import Appliance, GuestFs

    app = Appliance(image, fmt=fmt, readonly=False)
    try:
        dev = app.find_label("boot")
        if dev is None:
            raise BadImageError(f"{image}: no filesystem labelled 'boot'",
                                hint="customize-image needs an FCOS-layout image")
        fs = GuestFs(app, dev, readonly=False)
        apply(fs, c, report)
        fs.commit()
        fs.unmount()
    finally:
        app.close()


def _customize_qemu(image: Path, fmt: str, c: Customization, report: ChangeReport) -> None:
    """Non-raw image changed through QEMU's block layer (see imagebuilder.image.qemuimg)."""
    from . import qemuimg

    size = qemuimg.virtual_size(image, fmt)
    with tempfile.TemporaryDirectory(prefix="imagebuilder-customize-") as td:
        def read(off: int, n: int) -> bytes:
            p = Path(td) / "window.raw"
            qemuimg.extract(image, fmt, p, off, n)
            data = p.read_bytes()
            p.unlink()
            return data

        part = boot_partition_from(table_from_reader(read, size), read, str(image))
        before, after = Path(td) / "boot.orig", Path(td) / "boot.new"
        qemuimg.extract(image, fmt, before, part.offset, part.size)
        with open(before, "rb") as s, open(after, "wb") as d:
            copy_sparse(s, d, 0, part.size, 0)
        whole = BootPartition(number=part.number, offset=0, size=part.size, label=part.label)
        _customize_ext4(after, whole, c, report)
        n = qemuimg.write_chunks(image, fmt, after, part.offset,
                                 qemuimg.changed_chunks(before, after))
        log.info("qemu-io wrote %d bytes into %s", n, image)


def customize_image(image: str | os.PathLike[str], c: Customization, *,
                    output: str | os.PathLike[str] | None = None,
                    force: bool = False) -> ChangeReport:
    """Apply ``c`` to ``image`` (in place) or to a copy at ``output``; see the module doc."""
    from . import qemuimg

    t0 = time.monotonic()
    src = Path(image)
    if not src.is_file():
        raise UserInputError(f"{src}: image not found")
    out = Path(output) if output is not None else None
    if out is not None and out.resolve() == src.resolve():
        out = None  # -o IMAGE is in place
    fmt = detect_format(src)
    if fmt == "raw":
        find_boot_partition(src)  # fail early with a clear message
        report = ChangeReport(image=str(src), output=str(out or src), backend="debugfs")
        if out is None:
            _customize_raw_in_place(src, c, report)
        else:
            with temp_path_in(out, force=force) as tmp:
                with open(src, "rb") as s, open(tmp, "r+b") as d:
                    copy_sparse(s, d, 0, os.fstat(s.fileno()).st_size, 0)
                _customize_ext4(tmp, find_boot_partition(tmp), c, report)
        report.seconds = time.monotonic() - t0
        return report
    via_qemu = qemuimg.can_write(src, fmt)
    report = ChangeReport(image=str(src), output=str(out or src),
                          backend=f"debugfs + qemu-io ({fmt})" if via_qemu else f"libguestfs ({fmt})")
    if via_qemu and out is None:
        _customize_qemu(src, fmt, c, report)  # writes only after every check passed
    else:
        target = out if out is not None else src
        if out is not None and out.exists() and not force:
            raise UserInputError(f"{out}: file exists", hint="use --force (-f) to overwrite")
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            with open(src, "rb") as s, open(tmp, "r+b") as d:
                copy_sparse(s, d, 0, os.fstat(s.fileno()).st_size, 0)
            os.chmod(tmp, os.stat(src).st_mode & 0o7777)
            if via_qemu:
                _customize_qemu(tmp, fmt, c, report)
            else:
                _customize_guestfs(tmp, fmt, c, report)
            commit_tempfile(tmp, target, force=True if out is None else force)
        finally:
            tmp.unlink(missing_ok=True)
    report.seconds = time.monotonic() - t0
    return report
