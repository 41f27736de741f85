"""Applying byte patches: in place, to a new file, or streamed to stdout.

All three produce byte-identical results. Every patch is validated (sorted,
non-overlapping, inside the file) before the first byte is written.

* in place: the original bytes of every region are read first; if a write
  fails, the regions already written are restored (all-or-nothing). Like
  coreos-installer, no fsync: only a few hundred KiB change.
* ``-o FILE``: a temp file beside the target receives a fast copy of the input
  (reflink / copy_file_range), the patches, an fsync, then a no-clobber rename
  (``force`` replaces). On error the temp file is removed.
* ``-o -``: the gaps are copied with sendfile, the regions written from memory;
  refused when stdout is a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import fsutil
from ..errors import InternalError, UserInputError
from .image import Region

_CHUNK = 4 << 20


def validate_patches(patches: Sequence[Region], file_size: int) -> list[Region]:
    regions = sorted(patches, key=lambda r: r.offset)
    cursor = 0
    for r in regions:
        if r.offset < cursor:
            raise InternalError(f"region starting at {r.offset} precedes current offset {cursor}")
        if r.end > file_size:
            raise InternalError(f"region at {r.offset} (+{len(r.data)}) runs past the end of the "
                                f"image ({file_size} bytes)")
        cursor = r.end
    return regions


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"short write at offset {offset}")
        view = view[n:]
        offset += n


def _apply(fd: int, regions: Sequence[Region]) -> None:
    for r in regions:
        _pwrite_all(fd, r.data, r.offset)


def apply_in_place(path: str | os.PathLike[str], patches: Sequence[Region]) -> None:
    """Patch the file itself; restore already-written regions if a write fails."""
    if not patches:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise UserInputError(f"{path}: permission denied (opening for writing)") from None
    try:
        regions = validate_patches(patches, os.fstat(fd).st_size)
        originals = [Region(r.offset, os.pread(fd, len(r.data), r.offset)) for r in regions]
        done: list[Region] = []
        try:
            for r, orig in zip(regions, originals):
                done.append(orig)
                _pwrite_all(fd, r.data, r.offset)
        except BaseException:
            with contextlib.suppress(OSError):
                _apply(fd, done)
            raise
    finally:
        os.close(fd)


class EarlyCopy:
    """``-o``: the copy of the input, started in a background thread before the patches exist.

    Copying a big image is I/O; computing the patches (start-up, parsing, validating and
    compressing configs) is CPU. Started right after the output checks, the copy into the
    temp file runs while the rest of the command works; :func:`write_copy` (``early=``)
    then waits for it, applies the patches, fsyncs and renames as usual. The caller must
    call :meth:`discard` when done (a no-op once committed): on any error the copy is
    stopped at the next chunk and the temp file removed.
    """

    def __init__(self, src: str | os.PathLike[str], dest: str | os.PathLike[str]):
        import tempfile
        import threading

        dest = Path(dest)
        parent = dest.parent if str(dest.parent) else Path(".")
        self.src = src
        self.cancelled = False
        self.committed = False
        self.error: BaseException | None = None
        fd, name = tempfile.mkstemp(prefix=".imagebuilder-temp-", suffix=".iso", dir=parent)
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "r+b")
        self.thread = threading.Thread(target=self._run, name="imagebuilder-early-copy",
                                       daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> EarlyCopy | None:
        """Start copying, or None if that fails (the normal path then reports the problem)."""
        try:
            return cls(src, dest)
        except Exception:
            return None

    def _run(self) -> None:
        try:
            os.fchmod(self.file.fileno(), 0o644)
            with open(self.src, "rb") as sf:
                _copy_starting_writeback(sf, self.file, lambda: self.cancelled)
        except BaseException as e:  # reported by wait()
            self.error = e

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error

    def discard(self) -> None:
        if self.committed:
            return
        self.cancelled = True
        self.thread.join()
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def write_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str],
               patches: Sequence[Region], *, force: bool = False,
               early: EarlyCopy | None = None) -> None:
    """Copy src to dest (temp + fsync + no-clobber rename) with the patches applied.

    ``early``: the copy already started by :class:`EarlyCopy` for this src and dest.
    """
    dest = Path(dest)
    parent = fsutil.check_output_target(dest, force=force)
    if early is not None:
        try:
            with open(src, "rb") as sf:
                regions = validate_patches(patches, os.fstat(sf.fileno()).st_size)
            early.wait()
            tf = early.file
            tf.flush()
            _apply(tf.fileno(), regions)
            os.fsync(tf.fileno())
            tf.close()
            fsutil.commit_tempfile(early.tmp, dest, force=force)
            early.committed = True
        except BaseException:
            early.discard()
            raise
        return
    import tempfile

    with open(src, "rb") as sf:
        regions = validate_patches(patches, os.fstat(sf.fileno()).st_size)
        fd, name = tempfile.mkstemp(prefix=".imagebuilder-temp-", suffix=".iso", dir=parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "r+b") as tf:
                os.fchmod(tf.fileno(), 0o644)
                _copy_starting_writeback(sf, tf)
                tf.flush()
                _apply(tf.fileno(), regions)
                os.fsync(tf.fileno())
            fsutil.commit_tempfile(tmp, dest, force=force)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


_WRITEBACK_CHUNK = 64 << 20


def _copy_starting_writeback(sf, tf, cancelled=lambda: False) -> None:
    """fsutil.fast_copy, but a copy_file_range copy starts writeback chunk by chunk.

    ``-o`` fsyncs the copy before the rename. With a reflink that is cheap; with an
    in-kernel copy (ext4) the whole image is dirty in the page cache and the fsync would
    then write all of it at the end. Kicking off writeback of each 64 MiB chunk as soon
    as it is copied (sync_file_range(SYNC_FILE_RANGE_WRITE): asynchronous, not a
    durability guarantee -- the fsync still is) overlaps the disk writes with the copy.
    """
    import fcntl

    try:
        fcntl.ioctl(tf.fileno(), fsutil.FICLONE, sf.fileno())
        return
    except OSError:
        pass
    kick = _sync_file_range()
    src, dst = sf.fileno(), tf.fileno()
    size = os.fstat(src).st_size
    off = 0
    try:
        while off < size:
            if cancelled():
                return
            n = os.copy_file_range(src, dst, min(_WRITEBACK_CHUNK, size - off), off, off)
            if n == 0:
                break
            if kick is not None:
                kick(dst, off, n, 2)  # SYNC_FILE_RANGE_WRITE; its result does not matter
            off += n
    except OSError as e:
        import errno

        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise  # ENOSPC, EIO...: a real write error
        off = -1
    if off != size:  # no copy_file_range here (or a short copy): the plain way, from the start
        fsutil.fast_copy(sf, tf)


_SFR: list = []


def _sync_file_range():
    """libc's sync_file_range(fd, offset, nbytes, flags), or None."""
    if not _SFR:
        fn = None
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _SFR.append(fn)
    return _SFR[0]


def check_stdout_not_tty(out_fd: int | None = None) -> None:
    fd = sys.stdout.fileno() if out_fd is None else out_fd
    if os.isatty(fd):
        raise UserInputError("Refusing to write binary data to terminal",
                             hint="redirect stdout to a file or pipe, or use -o FILE")


def stream(src: str | os.PathLike[str], patches: Sequence[Region], out_fd: int | None = None) -> None:
    """Write the patched image to out_fd (default: stdout) without a temporary copy."""
    if out_fd is None:
        sys.stdout.flush()
        out_fd = sys.stdout.fileno()
    check_stdout_not_tty(out_fd)
    with open(src, "rb") as sf:
        in_fd = sf.fileno()
        size = os.fstat(in_fd).st_size
        regions = validate_patches(patches, size)
        cursor = 0
        for r in regions:
            _copy_range(in_fd, out_fd, cursor, r.offset - cursor)
            _write_all(out_fd, r.data)
            cursor = r.end
        _copy_range(in_fd, out_fd, cursor, size - cursor)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_range(in_fd: int, out_fd: int, offset: int, count: int) -> None:
    end = offset + count
    try:
        while offset < end:
            n = os.sendfile(out_fd, in_fd, offset, min(end - offset, 1 << 30))
            if n == 0:
                raise OSError(f"unexpected end of input at offset {offset}")
            offset += n
        return
    except OSError as e:
        import errno

        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while offset < end:
        buf = os.pread(in_fd, min(_CHUNK, end - offset), offset)
        if not buf:
            raise OSError(f"unexpected end of input at offset {offset}")
        _write_all(out_fd, buf)
        offset += len(buf)


def write_result(iso, patches: Sequence[Region], output: str | None, force: bool = False,
                 early: EarlyCopy | None = None) -> None:
    """Apply patches the way the user asked: None = in place, "-" = stdout, else a new file.

    ``iso`` is the :class:`~imagebuilder.iso.image.IsoImage` the patches came from;
    ``early``: an :class:`EarlyCopy` of it to ``output``, if one was started.
    """
    src = iso.path
    target = src if output is None else ("stdout" if output == "-" else output)
    try:
        if output is None:
            apply_in_place(src, patches)
        elif output == "-":
            stream(src, patches)
        else:
            write_copy(src, output, patches, force=force, early=early)
    except BrokenPipeError:
        raise
    except OSError as e:
        raise WriteError(f"writing {target}: {e.strerror or e}") from e


class WriteError(UserInputError):
    """Writing the result failed (disk full, I/O error...); nothing was left behind."""


def _copy_file_range_all(in_fd: int, out_fd: int, src_off: int, count: int) -> None:
    dst_off = os.lseek(out_fd, 0, os.SEEK_CUR)
    done = 0
    try:
        while done < count:
            n = os.copy_file_range(in_fd, out_fd, count - done, src_off + done, dst_off + done)
            if n == 0:
                raise OSError(f"unexpected end of input at offset {src_off + done}")
            done += n
        os.lseek(out_fd, dst_off + done, os.SEEK_SET)
        return
    except OSError as e:
        import errno

        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.lseek(out_fd, dst_off + done, os.SEEK_SET)
    while done < count:
        buf = os.pread(in_fd, min(_CHUNK, count - done), src_off + done)
        if not buf:
            raise OSError(f"unexpected end of input at offset {src_off + done}")
        _write_all(out_fd, buf)
        done += len(buf)


def extract_pxe(iso, out_dir: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Copy every file of /images/pxeboot to OUT_DIR/<isostem>-<name>.

    The initramfs gets the embedded initrd (Ignition config, network keyfiles)
    appended, 4-byte aligned, the way the ISO's boot loader loads
    ``initrd.img`` + the embed area, so the PXE artifacts boot the same
    customized live system. (Kernel arguments must go into the PXE config.)
    Each file is written atomically and never clobbers without ``force``.
    """
    from . import cpio
    from .areas import PXEBOOT_DIR
    from .iso9660 import IsoNotFound

    fs = iso.fs
    try:
        pxe = fs.lookup(PXEBOOT_DIR)
    except IsoNotFound:
        raise UserInputError(f"{iso.path}: Unrecognized CoreOS ISO image: no /images/pxeboot") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(iso.path).stem
    extra = b""
    if iso.area_in_use:
        raw = iso.original_area_data
        extra = raw[:cpio.initrd_extent(raw)]
    written: list[Path] = []
    entries = [e for e in fs.list_dir(pxe) if not e.is_dir]
    for e in entries:
        dest = out / f"{stem}-{e.name.lower()}"
        fsutil.check_output_target(dest, force=force)
    for e in entries:
        dest = out / f"{stem}-{e.name.lower()}"
        with fsutil.temp_path_in(dest, force=force) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _copy_file_range_all(fs.fd, fd, e.offset, e.size)
                if extra and e.name.lower() == "initrd.img":
                    _write_all(fd, b"\0" * ((4 - e.size % 4) % 4) + extra)
            finally:
                os.close(fd)
        written.append(dest)
    return written
