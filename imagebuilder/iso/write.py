"""Applying byte patches: in place, to a new file, or streamed to stdout.

All three produce byte-identical results. Every patch is validated (sorted,
non-overlapping, inside the file) before the first byte is written.

* in place: through the ISO's own descriptor, opened read-write and locked
  exclusively (:meth:`IsoImage.open` with ``writable=True``). The original bytes of
  every region are read first; if a write fails (or the process is told to stop), the
  regions already written are restored (all-or-nothing); the data is then fdatasync'ed.
* ``-o FILE``: a locked temp file beside the target receives a copy of the input
  (:func:`imagebuilder.fsutil.copy_file`: reflink, else copy_file_range with early
  writeback), the patches, an fsync, then a no-clobber rename (``force`` replaces). On
  error the temp file is removed.
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


def apply_in_place(fd: int, patches: Sequence[Region]) -> None:
    """Patch the open (read-write) file; restore already-written regions if a write fails,
    fdatasync when done."""
    if not patches:
        return
    regions = validate_patches(patches, os.fstat(fd).st_size)
    originals = [Region(r.offset, os.pread(fd, len(r.data), r.offset)) for r in regions]
    done: list[Region] = []
    try:
        for r, orig in zip(regions, originals):
            done.append(orig)
            _pwrite_all(fd, r.data, r.offset)
        os.fdatasync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            for r in done:
                _pwrite_all(fd, r.data, r.offset)
            os.fdatasync(fd)
        raise


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
        import threading

        self.src = src
        self.cancelled = False
        self.committed = False
        self.error: BaseException | None = None
        fd, self.tmp = fsutil.make_temp(dest)
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
            fsutil.copy_file(self.src, self.file, writeback=True,
                             cancelled=lambda: self.cancelled)
        except fsutil.CopyCancelled:
            pass
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
    fsutil.check_output_target(dest, force=force)
    if early is None:
        early = EarlyCopy(src, dest)
    try:
        regions = validate_patches(patches, os.stat(src).st_size)
        early.wait()
        tf = early.file
        tf.flush()
        for r in regions:
            _pwrite_all(tf.fileno(), r.data, r.offset)
        os.fsync(tf.fileno())
        fsutil.commit_tempfile(early.tmp, dest, force=force)
        early.committed = True
        tf.close()
    finally:
        early.discard()


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
            send_range(in_fd, out_fd, cursor, r.offset - cursor)
            write_all(out_fd, r.data)
            cursor = r.end
        send_range(in_fd, out_fd, cursor, size - cursor)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_range(in_fd: int, out_fd: int, offset: int, count: int) -> None:
    """Copy count bytes at offset of in_fd to a stream (pipe, socket, stdout)."""
    end = offset + count
    with contextlib.suppress(OSError):
        while offset < end:
            n = os.sendfile(out_fd, in_fd, offset, min(end - offset, 1 << 30))
            if n == 0:
                raise OSError(f"unexpected end of input at offset {offset}")
            offset += n
    while offset < end:  # no sendfile to this kind of descriptor
        buf = os.pread(in_fd, min(_CHUNK, end - offset), offset)
        if not buf:
            raise OSError(f"unexpected end of input at offset {offset}")
        write_all(out_fd, buf)
        offset += len(buf)


def write_result(iso, patches: Sequence[Region], output: str | None, force: bool = False,
                 early: EarlyCopy | None = None) -> None:
    """Apply patches the way the user asked: None = in place, "-" = stdout, else a new file.

    ``iso`` is the :class:`~imagebuilder.iso.image.IsoImage` the patches came from (opened
    writable for an in-place edit); ``early``: an :class:`EarlyCopy` of it to ``output``.
    """
    src = iso.path
    target = src if output is None else ("stdout" if output == "-" else output)
    try:
        if output is None:
            if not _writable(iso.fs.fd):
                raise InternalError(f"{src} was not opened for writing")
            apply_in_place(iso.fs.fd, patches)
        elif output == "-":
            stream(src, patches)
        else:
            write_copy(src, output, patches, force=force, early=early)
    except BrokenPipeError:
        raise
    except OSError as e:
        raise WriteError(f"writing {target}: {e.strerror or e}") from e


def _writable(fd: int) -> bool:
    import fcntl

    return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


class WriteError(UserInputError):
    """Writing the result failed (disk full, I/O error...); nothing was left behind."""
