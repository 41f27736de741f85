"""Atomic, no-clobber output files and fast copies.

Every file imagebuilder produces is written to a temporary file in the target
directory, fsync'ed and renamed into place, so a crash or an error never leaves
a half-written image. Without ``force`` an existing target is never replaced
(the final rename uses ``renameat2(RENAME_NOREPLACE)`` semantics via
``os.link`` + unlink, which is atomic and refuses to clobber).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserInputError

FICLONE = 0x40049409  # ioctl number for reflink copies (btrfs, xfs)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_tempfile(tmp: Path, dest: Path, *, force: bool = False) -> None:
    """Move a finished temp file onto dest: replace if force, else refuse to clobber."""
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails with EEXIST instead of clobbering
        except FileExistsError:
            raise UserInputError(f"{dest}: file exists", hint="use --force (-f) to overwrite") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # filesystems without hard links: check-then-rename (small race, best effort)
            if dest.exists():
                raise UserInputError(f"{dest}: file exists", hint="use --force (-f) to overwrite") from None
            os.rename(tmp, dest)
        else:
            os.unlink(tmp)
    _fsync_dir(dest.parent)


def check_output_target(dest: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse up front an existing dest (unless force) or a missing parent; return the parent."""
    dest = Path(dest)
    if dest.exists() and not force:
        raise UserInputError(f"{dest}: file exists", hint="use --force (-f) to overwrite")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"{parent}: output directory does not exist")
    return parent


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str], *, force: bool = False, mode: int = 0o644,
                  binary: bool = True) -> Iterator[tuple[Path, object]]:
    """Yield ``(tmp_path, fileobj)`` for writing; on success fsync + rename onto dest.

    On any exception the temp file is removed and dest is untouched.
    Refuses up front (before any work) if dest exists and not force.
    """
    dest = Path(dest)
    parent = check_output_target(dest, force=force)
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            yield tmp, f
            f.flush()
            os.fsync(f.fileno())
        commit_tempfile(tmp, dest, force=force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(dest: str | os.PathLike[str], data: bytes | str, *, force: bool = False,
                 mode: int = 0o644) -> None:
    if isinstance(data, str):
        data = data.encode()
    with atomic_output(dest, force=force, mode=mode) as (_tmp, f):
        f.write(data)


@contextlib.contextmanager
def temp_path_in(dest: str | os.PathLike[str], *, force: bool = False,
                 mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp *path* next to dest for tools that write files themselves.

    The temp path exists (empty) on entry; on success it is fsync'ed and renamed.
    """
    dest = Path(dest)
    parent = check_output_target(dest, force=force)
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    os.fchmod(fd, mode)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        commit_tempfile(tmp, dest, force=force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def fast_copy(src_f, dst_f) -> str:
    """Copy open file src_f into dst_f: reflink, else copy_file_range, else read/write.

    Preserves holes only in the reflink case. Returns the method used.
    """
    try:
        fcntl.ioctl(dst_f.fileno(), FICLONE, src_f.fileno())
        return "reflink"
    except OSError:
        pass
    size = os.fstat(src_f.fileno()).st_size
    off = 0
    try:
        while off < size:
            n = os.copy_file_range(src_f.fileno(), dst_f.fileno(), size - off, off, off)
            if n == 0:
                break
            off += n
        if off == size:
            return "copy_file_range"
    except OSError:
        pass
    src_f.seek(off)
    dst_f.seek(off)
    while True:
        buf = src_f.read(4 << 20)
        if not buf:
            break
        dst_f.write(buf)
    return "readwrite"


def read_input(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """Read a user-supplied file ('-' = stdin) with a clear error."""
    import sys

    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a directory, expected a {what}") from None
    except PermissionError:
        raise UserInputError(f"{path}: permission denied") from None


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield the (start, end) byte ranges of an open file that hold data (SEEK_DATA/SEEK_HOLE).

    A filesystem without hole reporting yields the whole file as one range.
    """
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        yield start, end
        pos = end
