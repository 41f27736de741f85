"""The ``iso`` verbs as library calls: each one opens the ISO, decides where the result
goes (in place, ``-o FILE``, ``-o -``), mutates and writes.

``output``: None edits the ISO in place (opened read-write under an exclusive lock, so
concurrent edits queue instead of losing one another's changes); ``"-"`` streams the
result to stdout; any other string is a new file (no clobbering without ``force``),
whose copy starts right after the ISO is opened. The input is never modified unless
``output`` is None, and on any error nothing is left behind.

Messages for the user go through ``say`` (notes, warnings; default: stderr); they are
only passed on after the result is written, except for warnings about the inputs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import UserInputError
from .image import IsoImage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .customize import Customizations
    from .rebuild import RebuildReport

Say = Callable[[str], None]


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def check_output(output: str | None, force: bool) -> None:
    """Fail early (before any work) on a terminal stdout or an unusable -o file."""
    if output == "-":
        from .write import check_stdout_not_tty

        check_stdout_not_tty()
    elif output is not None:
        from ..fsutil import check_output_target

        check_output_target(output, force=force)


def modify(iso_path: str | Path, output: str | None, force: bool,
           mutate: Callable[[IsoImage], Any], say: Say = stderr) -> Any:
    """Open, mutate (in memory), write the patches where ``output`` says; mutate's result."""
    check_output(output, force)
    with IsoImage.open(iso_path, writable=output is None, notify=say) as iso:
        early = None
        if output is not None and output != "-":
            from .write import EarlyCopy

            early = EarlyCopy.start(iso_path, output)
        try:
            result = mutate(iso)
            from .write import write_result

            write_result(iso, iso.patches(), output, force, early=early)
        finally:
            if early is not None:
                early.discard()
    return result


def read(iso_path: str | Path, what: Callable[[IsoImage], Any], say: Say = stderr) -> Any:
    """Open read-only (shared lock) and return what(iso)."""
    with IsoImage.open(iso_path, notify=say) as iso:
        return what(iso)


def _replace_damaged(iso: IsoImage, force: bool, say: Say) -> None:
    """Before writing the Ignition area: damaged contents need force and are dropped."""
    if not iso.area_damaged:
        return
    if not force:
        iso.members  # raises, naming the problem and how to repair it
    problem = iso.discard_damaged_area()
    say(f"warning: {iso.path}: the Ignition embed area held undecodable data ({problem}); "
        "it is overwritten")


# -- ignition ----------------------------------------------------------------------------
def ignition_embed(iso_path: str | Path, config: bytes, *, output: str | None = None,
                   force: bool = False, strict: bool = False, where: str = "-",
                   say: Say = stderr) -> None:
    """Embed ``config`` (read from ``where``) as the live Ignition config.

    A config Ignition would reject is embedded with a warning (as coreos-installer embeds
    anything), or refused with ``strict``."""
    from .inputs import check_ignition

    check_ignition(config, where, strict=strict, warn=say)

    def mutate(iso: IsoImage) -> None:
        _replace_damaged(iso, force, say)
        if iso.has_ignition and not force:
            raise UserInputError(
                "This ISO image already has an embedded Ignition config; use -f to force.")
        iso.set_ignition(config)

    modify(iso_path, output, force, mutate, say)


def ignition_show(iso_path: str | Path, say: Say = stderr) -> bytes:
    config = read(iso_path, lambda iso: iso.ignition, say)
    if config is None:
        raise UserInputError("No embedded Ignition config.")
    return config


def _remove(iso_path: str | Path, output: str | None, force: bool, say: Say,
            remove: Callable[[IsoImage], None]) -> None:
    """Remove part of the embedded initrd; damaged area contents go as a whole."""
    def mutate(iso: IsoImage) -> None:
        _replace_damaged(iso, True, say)
        remove(iso)

    modify(iso_path, output, force, mutate, say)


def ignition_remove(iso_path: str | Path, *, output: str | None = None, force: bool = False,
                    say: Say = stderr) -> None:
    """Remove the live Ignition config (network keyfiles stay)."""
    _remove(iso_path, output, force, say, IsoImage.remove_ignition)


# -- network -----------------------------------------------------------------------------
def network_embed(iso_path: str | Path, keyfiles: Sequence[tuple[str, bytes]], *,
                  output: str | None = None, force: bool = False, strict: bool = False,
                  say: Say = stderr) -> None:
    """Embed NetworkManager keyfiles ``(name, contents)`` for the live initramfs."""
    from .inputs import check_keyfile

    for name, data in keyfiles:
        check_keyfile(data, name, strict=strict, warn=say)

    def mutate(iso: IsoImage) -> None:
        if not iso.features.live_initrd_network:
            raise UserInputError("This OS image does not support customizing network settings.")
        _replace_damaged(iso, force, say)
        if iso.has_network and not force:
            raise UserInputError(
                "This ISO image already has embedded network settings; use -f to force.")
        iso.remove_network()
        iso.add_network_keyfiles([(Path(n).name, d) for n, d in keyfiles])

    modify(iso_path, output, force, mutate, say)


def network_extract(iso_path: str | Path, say: Say = stderr) -> dict[str, bytes]:
    files = read(iso_path, lambda iso: iso.network_files, say)
    if not files:
        raise UserInputError("No embedded network settings.")
    return files


def network_remove(iso_path: str | Path, *, output: str | None = None, force: bool = False,
                   say: Say = stderr) -> None:
    """Remove the network keyfiles (the Ignition config stays)."""
    _remove(iso_path, output, force, say, IsoImage.remove_network)


# -- kargs -------------------------------------------------------------------------------
def kargs_modify(iso_path: str | Path, *, append: Sequence[str] = (),
                 delete: Sequence[str] = (), replace: Sequence[str] = (),
                 output: str | None = None, force: bool = False, say: Say = stderr) -> str:
    """Edit the live kargs (delete, append, replace); the new kargs."""
    return modify(iso_path, output, force, lambda iso: iso.modify_kargs(
        append=append, delete=delete, replace=replace), say)


def kargs_reset(iso_path: str | Path, *, output: str | None = None, force: bool = False,
                say: Say = stderr) -> None:
    modify(iso_path, output, force, lambda iso: iso.reset_kargs(), say)


def kargs_show(iso_path: str | Path, *, default: bool = False, say: Say = stderr) -> str:
    return read(iso_path, lambda iso: iso.default_kargs if default else iso.kargs, say)


# -- whole image -------------------------------------------------------------------------
def reset(iso_path: str | Path, *, output: str | None = None, force: bool = False,
          say: Say = stderr) -> None:
    """Pristine again: empty Ignition area, default kargs (damaged areas included)."""
    modify(iso_path, output, force, lambda iso: iso.reset(), say)


def inspect(iso_path: str | Path, say: Say = stderr) -> dict:
    return read(iso_path, lambda iso: iso.inspect(), say)


def format_inspect(info: dict) -> str:
    """The human-readable form of :func:`inspect`'s report."""
    a = info["ignition_area"]
    state = ("damaged: " + a["problem"]) if a.get("problem") else (
        "in use" if a["in_use"] else "empty")
    lines = [
        f"ISO:            {info['path']} ({info['size']} bytes)",
        f"Volume ID:      {info['volume_id']}",
        f"Customized:     {'yes' if info['customized'] else 'no'}",
        f"Ignition area:  offset {a['offset']}, length {a['length']} "
        f"(via {a['source']}{', in ' + a['file'] if a['file'] else ''}), {state}",
    ]
    k = info["kargs"]
    if k is None:
        lines.append("Kernel args:    not customizable (no karg embed areas)")
    else:
        areas = ", ".join(f"{r['offset']}" + (f" ({r['file']})" if r["file"] else "")
                          for r in k["areas"])
        lines += [f"Kargs areas:    {k['size']} bytes each at {areas} (via {k['source']})",
                  f"Default kargs:  {k['default']}",
                  f"Current kargs:  " + (f"damaged: {k['problem']}" if k.get("problem")
                                         else k['current'])]
    f = info["features"]
    feats = [n for n in ("installer-config", "live-initrd-network") if f[n]]
    if f["installer-config-directives"]:
        feats.append("installer-config-directives(" +
                     ",".join(sorted(d for d, v in f["installer-config-directives"].items() if v))
                     + ")")
    lines.append(f"Features:       {', '.join(feats) if feats else 'none'}")
    files = info["embedded"]["files"]
    lines.append(f"Embedded files: {len(files)}")
    for e in files:
        lines.append(f"  {e['path']}  {e['size']} bytes  {e['mode']}  sha256:{e['sha256']}")
    return "\n".join(lines)


def extract_pxe(iso_path: str | Path, out_dir: str | Path, *, force: bool = False,
                say: Say = stderr) -> list[Path]:
    """``iso extract pxe``: the PXE artifacts (with the embedded initrd appended)."""
    from .pxe import extract_pxe as _extract

    def run(iso: IsoImage) -> tuple[list[Path], str | None]:
        paths = _extract(iso, out_dir, force=force)
        note = None
        if iso.kargs_supported and not iso.kargs_damaged and iso.kargs != iso.default_kargs:
            note = (f"note: the ISO's live kernel arguments are not part of the PXE artifacts; "
                    f"put them in the PXE config: {iso.kargs}")
        return paths, note

    paths, note = read(iso_path, run, say)
    if note:
        say(note)
    return paths


# -- customize ---------------------------------------------------------------------------
def customize(iso_path: str | Path, c: Customizations, *, output: str | None = None,
              force: bool = False, add_files: Sequence[str] = (),
              karg_append: Sequence[str] = (), karg_delete: Sequence[str] = (),
              volume_id: str | None = None, say: Say = stderr) -> RebuildReport | None:
    """``iso customize``: patch the embed areas (in place or a copy), or rebuild the ISO when
    a rebuild option is given (``add_files`` ``SRC:DEST``, ``karg_*``, ``volume_id``).
    Returns the rebuild's report, or None for an embed-area customization."""
    check_output(output, force)
    notes: list[str] = []
    if add_files or karg_append or karg_delete or volume_id is not None:
        from .rebuild import customize_rebuild

        report = customize_rebuild(iso_path, output, force, add_file=add_files,
                                   karg_append=karg_append, karg_delete=karg_delete,
                                   volume_id=volume_id, embed=c, notes=notes.append)
    else:
        from .areas import REBUILD_ALTERNATIVES
        from .customize import customize_iso
        from .rebuild import has_embed_areas

        if not has_embed_areas(iso_path):
            flags = "the given flags need them" if not c.is_empty else "nothing to customize"
            raise UserInputError(f"{iso_path}: Unrecognized CoreOS ISO image: no embed areas "
                                 f"({flags})",
                                 hint=REBUILD_ALTERNATIVES)
        modify(iso_path, output, force,
               lambda iso: customize_iso(iso, c, force=force, notes=notes.append), say)
        report = None
    for n in notes:
        say(n)
    return report
