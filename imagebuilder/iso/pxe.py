"""PXE: customizing a CoreOS live PXE initramfs, wrapping configs in initrds, and taking
the PXE artifacts out of a live ISO.

A PXE initramfs cannot be patched in place like an ISO's embed area; as coreos-installer
does, :func:`pxe_customize` copies the input initramfs and appends one more xz-compressed
newc archive holding the customization (the kernel unpacks concatenated archives, later
files win). The input is scanned as a stream (bounded decompression; only
``etc/coreos/features.json`` is kept in memory), so a real initramfs of any size or a
decompression bomb costs little memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import fsutil
from ..errors import UserInputError
from . import cpio
from .paths import INITRD_FEATURES_PATH, IGNITION_PATH, LIVE_STAMP, NETWORK_DIR, PXEBOOT_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .customize import Customizations
    from .image import IsoImage

#: how far a PXE initramfs may expand while it is scanned (streamed, not held in memory)
PXE_SCAN_LIMIT = 2 << 30
_FEATURES_LIMIT = 1 << 20
PXE_KARGS_WARNING = ("PXE configuration must include kernel arguments: "
                     "ignition.firstboot ignition.platform.id=metal")


def customize_initrd(initrd, c: Customizations, *, where: str = "initramfs",
                     notes: Callable[[str], None]) -> bytes:
    """The customization archive to append to a live PXE initramfs (b"" for a no-op).

    ``initrd``: bytes or a seekable binary file. Refuses an initramfs that is not a
    CoreOS live one or that is already customized. ``notes`` gets coreos-installer's notes.
    """
    from .customize import build_initrd_members, features_from_json

    try:
        scan = cpio.scan_initrd(initrd, limit=PXE_SCAN_LIMIT, keep_limit=_FEATURES_LIMIT,
                                keep=lambda p: p == INITRD_FEATURES_PATH)
    except cpio.InitrdError as e:
        raise cpio.InitrdError(f"{where}: {e.message}") from None
    if LIVE_STAMP not in scan.names:
        raise UserInputError(f"{where}: not a CoreOS live initramfs image")
    if IGNITION_PATH in scan.names or any(p.startswith(NETWORK_DIR + "/") for p in scan.names):
        raise UserInputError(f"{where}: this initramfs is already customized")
    feat = scan.members.get(INITRD_FEATURES_PATH)
    features = features_from_json(feat.data if feat else None,
                                  where=f"{where}:{INITRD_FEATURES_PATH}")
    new = build_initrd_members(c, features, notes=notes)
    if IGNITION_PATH in new:
        notes(PXE_KARGS_WARNING)
    if not new:
        return b""
    return cpio.write_initrd(cpio.members_from(new.items()))


def _spool_stdin(dest) -> None:
    src = sys.stdin.buffer
    while True:
        chunk = src.read(4 << 20)
        if not chunk:
            break
        dest.write(chunk)
    dest.flush()


def pxe_customize(initrd: str, c: Customizations, output: str, *, force: bool = False,
                  notes: Callable[[str], None]) -> None:
    """``pxe customize``: INITRD ('-': stdin) + the customization -> OUTPUT ('-': stdout).

    The output file is written beside its target and renamed (no clobbering without
    ``force``); the input is copied with :func:`imagebuilder.fsutil.copy_file` (a reflink
    where possible). Notes are passed on only once the output is complete.
    """
    import tempfile

    from .write import check_stdout_not_tty, send_range, write_all

    said: list[str] = []
    where = "stdin" if initrd == "-" else initrd
    if output == "-":
        check_stdout_not_tty()
    else:
        fsutil.check_output_target(output, force=force)
    with contextlib.ExitStack() as stack:
        tmp: Path | None = None
        if initrd == "-" and output != "-":  # stdin goes straight into the output's temp file
            fd, tmp = fsutil.make_temp(output)
            src = stack.enter_context(os.fdopen(fd, "r+b"))
            stack.callback(lambda: tmp.unlink(missing_ok=True))
            _spool_stdin(src)
        elif initrd == "-":
            src = stack.enter_context(tempfile.TemporaryFile(prefix="imagebuilder-initrd-"))
            _spool_stdin(src)
        else:
            try:
                src = stack.enter_context(open(initrd, "rb"))
            except OSError as e:
                raise UserInputError(f"{initrd}: {e.strerror or e}") from None
        tail = customize_initrd(src, c, where=where, notes=said.append)
        size = os.fstat(src.fileno()).st_size
        if output == "-":
            sys.stdout.flush()
            out_fd = sys.stdout.fileno()
            send_range(src.fileno(), out_fd, 0, size)
            write_all(out_fd, tail)
        else:
            if tmp is None:
                fd, tmp = fsutil.make_temp(output)
                out = stack.enter_context(os.fdopen(fd, "r+b"))
                stack.callback(lambda: tmp.unlink(missing_ok=True))
                fsutil.copy_file(src, out, writeback=True)
            else:
                out = src
            out.seek(size)
            out.write(tail)
            out.flush()
            os.fsync(out.fileno())
            fsutil.commit_tempfile(tmp, Path(output), force=force)
    for n in said:
        notes(n)


def wrap_ignition(config: bytes) -> bytes:
    """An xz newc initrd holding config.ign (as given, unchecked)."""
    return cpio.write_initrd(cpio.members_from([(IGNITION_PATH, config)]))


def wrap_network(keyfiles: Iterable[tuple[str, bytes]]) -> bytes:
    """An xz newc initrd holding NetworkManager keyfiles (etc/coreos-firstboot-network/)."""
    members: dict[str, bytes] = {}
    for name, data in keyfiles:
        if f"{NETWORK_DIR}/{name}" in members:
            raise UserInputError(f"multiple input files named '{name}'")
        members[f"{NETWORK_DIR}/{name}"] = data
    return cpio.write_initrd(cpio.members_from(members.items()))


def unwrap_ignition(initrd) -> bytes:
    """The Ignition config in an initrd (bytes or seekable file)."""
    m = cpio.scan_initrd(initrd, keep=lambda p: p == IGNITION_PATH).members.get(IGNITION_PATH)
    if m is None:
        raise UserInputError("No embedded Ignition config.")
    return m.data


def network_files(members) -> dict[str, bytes]:
    """Keyfile name -> contents of the keyfiles among initrd members (sorted by name)."""
    prefix = NETWORK_DIR + "/"
    return {p[len(prefix):]: m.data for p, m in sorted(members.items())
            if p.startswith(prefix) and "/" not in p[len(prefix):]}


def unwrap_network(initrd) -> dict[str, bytes]:
    """The NetworkManager keyfiles in an initrd (bytes or seekable file)."""
    files = network_files(cpio.scan_initrd(
        initrd, keep=lambda p: p.startswith(NETWORK_DIR + "/")).members)
    if not files:
        raise UserInputError("No embedded network settings.")
    return files


def extract_pxe(iso: IsoImage, out_dir: str | os.PathLike[str], *,
                force: bool = False) -> list[Path]:
    """Copy every file of /images/pxeboot to OUT_DIR/<isostem>-<name>.

    The initramfs gets the embedded initrd (Ignition config, network keyfiles)
    appended, 4-byte aligned, the way the ISO's boot loader loads ``initrd.img`` +
    the embed area, so the PXE artifacts boot the same customized live system.
    (Kernel arguments must go into the PXE config.) Each file is written atomically
    and never clobbers without ``force``.
    """
    from .image import REPAIR_HINT
    from .iso9660 import IsoNotFound

    fs = iso.fs
    try:
        pxe = fs.lookup(PXEBOOT_DIR)
    except IsoNotFound:
        raise UserInputError(f"{iso.path}: Unrecognized CoreOS ISO image: no /images/pxeboot") from None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: not a directory")
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(iso.path).stem
    extra = b""
    if iso.area_damaged:
        raise UserInputError(f"{iso.path}: {iso.area_problem}", hint=REPAIR_HINT)
    if iso.area_in_use:
        raw = iso.original_area_data
        extra = raw[:cpio.initrd_extent(raw)]
    entries = [e for e in fs.list_dir(pxe) if not e.is_dir]
    for e in entries:
        fsutil.check_output_target(out / f"{stem}-{e.name.lower()}", force=force)
    written: list[Path] = []
    for e in entries:
        dest = out / f"{stem}-{e.name.lower()}"
        with fsutil.atomic_output(dest, force=force) as (_tmp, f):
            fsutil.copy_file(fs.fd, f, src_offset=e.offset, length=e.size)
            if extra and e.name.lower() == "initrd.img":
                f.seek(e.size)
                f.write(b"\0" * ((4 - e.size % 4) % 4) + extra)
        written.append(dest)
    return written


def write_keyfiles(directory: str | os.PathLike[str], files: dict[str, bytes]) -> list[Path]:
    """Write keyfiles into directory (created if missing), mode 0600, never clobbering."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise UserInputError(f"{d}: not a directory")
    d.mkdir(parents=True, exist_ok=True)
    for name in files:
        fsutil.check_output_target(d / name)
    out = []
    for name, data in files.items():
        fsutil.write_atomic(d / name, data, mode=0o600)
        out.append(d / name)
    return out


def keyfiles_report(files: dict[str, bytes]) -> bytes:
    """The keyfiles as `iso network extract` prints them (a banner line before each)."""
    out: list[bytes] = []
    for i, (name, data) in enumerate(files.items()):
        if i:
            out.append(b"\n")
        out.append(f"########## {name} ##########\n".encode())
        out.append(data)
    return b"".join(out)


__all__ = ["customize_initrd", "pxe_customize", "wrap_ignition", "wrap_network",
           "unwrap_ignition", "unwrap_network", "extract_pxe", "write_keyfiles",
           "keyfiles_report", "PXE_KARGS_WARNING", "network_files"]
