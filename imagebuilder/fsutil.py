"""Atomic, no-clobber output files, the one file-copy primitive, and file locks.

Every file imagebuilder produces is written to a temporary file in the target
directory, fsync'ed and renamed into place, so a crash or an error never leaves
a half-written image. Without ``force`` an existing target is never replaced
(the final rename uses ``renameat2(RENAME_NOREPLACE)`` semantics via
``os.link`` + unlink, which is atomic and refuses to clobber).

Temporary files are named ``.NAME.ibPID-RANDOM.tmp`` and held under an exclusive
``flock`` by the process writing them. A process killed with SIGKILL cannot remove
its temp file; the next one that creates a temp file in the same directory does
(:func:`sweep_stale_temps`: the owner's pid is gone and nobody holds the lock).

:func:`copy_file` is the one way files (or ranges of them) are copied: a reflink
where the filesystem can, else ``copy_file_range`` over the source's data extents
(holes stay holes), else ``pread``/``pwrite`` (``EXDEV`` across filesystems and
friends), in 64 MiB chunks that can start their writeback early.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserInputError

FICLONE = 0x40049409  # ioctl number for reflink copies (btrfs, xfs)
OVERWRITE_HINT = "use --force (-f) to overwrite"
COPY_CHUNK = 64 << 20  # one copy_file_range call / one writeback kick
_RW_CHUNK = 8 << 20  # the pread/pwrite fallback's buffer
_NO_CFR = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF)
_TEMP_RE = re.compile(r"^\..+\.ib(?P<pid>\d+)-[0-9a-f]{12}\.tmp$")


# --------------------------------------------------------------------------- output files

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exists_error(dest: str | os.PathLike[str]) -> UserInputError:
    """The one "output exists" error (with the one overwrite hint)."""
    return UserInputError(f"{dest}: file exists", hint=OVERWRITE_HINT)


def commit_tempfile(tmp: Path, dest: Path, *, force: bool = False) -> None:
    """Move a finished temp file onto dest: replace if force, else refuse to clobber."""
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails with EEXIST instead of clobbering
        except FileExistsError:
            raise exists_error(dest) from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # filesystems without hard links: check-then-rename (small race, best effort)
            if dest.exists():
                raise exists_error(dest) from None
            os.rename(tmp, dest)
        else:
            os.unlink(tmp)
    _fsync_dir(dest.parent)


def check_output_target(dest: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse up front a directory, an existing dest (unless force) or a missing parent;
    return the parent directory."""
    dest = Path(dest)
    if dest.is_dir():
        raise UserInputError(f"{dest}: is a directory", hint="give the output file's name")
    if os.path.lexists(dest) and not force:
        raise exists_error(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"{parent}: output directory does not exist")
    return parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files in directory whose owner is dead (pid gone, lock free); return them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    me = os.getpid()
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if m is None or int(m["pid"]) == me or _pid_alive(int(m["pid"])):
            continue
        try:
            fd = os.open(e.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # somebody (another pid namespace?) still writes it
            os.close(fd)
            continue
        try:
            if os.path.samestat(os.fstat(fd), os.stat(e.path, follow_symlinks=False)):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def make_temp(dest: str | os.PathLike[str], *, mode: int = 0o644,
              sweep: bool = True) -> tuple[int, Path]:
    """Create ``.NAME.ibPID-RANDOM.tmp`` beside dest, locked (flock) by us: (fd, path).

    Stale temp files of dead processes in that directory are removed first.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if sweep:
        sweep_stale_temps(parent)
    while True:
        path = parent / f".{dest.name}.ib{os.getpid()}-{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        break
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.fchmod(fd, mode)  # not the umask's idea of it
    return fd, path


@contextlib.contextmanager
def _temp_beside(dest: Path, *, force: bool, mode: int) -> Iterator[tuple[int, Path]]:
    """A locked temp file beside dest (after the output checks); removed on any error."""
    check_output_target(dest, force=force)
    fd, tmp = make_temp(dest, mode=mode)
    try:
        yield fd, tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str], *, force: bool = False, mode: int = 0o644,
                  binary: bool = True) -> Iterator[tuple[Path, object]]:
    """Yield ``(tmp_path, fileobj)`` for writing; on success fsync + rename onto dest.

    On any exception the temp file is removed and dest is untouched.
    Refuses up front (before any work) if dest exists and not force.
    """
    dest = Path(dest)
    with _temp_beside(dest, force=force, mode=mode) as (fd, tmp):
        with os.fdopen(fd, "wb" if binary else "w") as f:
            yield tmp, f
            f.flush()
            os.fsync(f.fileno())
            commit_tempfile(tmp, dest, force=force)


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
    with _temp_beside(dest, force=force, mode=mode) as (fd, tmp):
        try:
            yield tmp
            if tmp.is_file():
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            commit_tempfile(tmp, dest, force=force)
        finally:
            os.close(fd)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def read_input(path: str | os.PathLike[str], what: str = "file", *,
               limit: int | None = None) -> bytes:
    """Read a user-supplied file ('-' = stdin) with a clear error; at most ``limit`` bytes."""
    import sys

    if str(path) == "-":
        f = sys.stdin.buffer
        data = f.read() if limit is None else f.read(limit + 1)
    else:
        try:
            with open(path, "rb") as f:
                data = f.read() if limit is None else f.read(limit + 1)
        except FileNotFoundError:
            raise UserInputError(f"{path}: {what} not found") from None
        except IsADirectoryError:
            raise UserInputError(f"{path}: is a directory, expected {_article(what)} {what}") from None
        except PermissionError:
            raise UserInputError(f"{path}: permission denied") from None
        except OSError as e:
            raise UserInputError(f"{path}: reading {what}: {e.strerror or e}") from None
    if limit is not None and len(data) > limit:
        raise UserInputError(f"{'stdin' if str(path) == '-' else path}: {what} is larger than "
                             f"the limit of {limit} bytes")
    return data


# --------------------------------------------------------------------------- locks

def lock_fd(fd: int, path: str | os.PathLike[str], *, exclusive: bool = True,
            timeout: float = 600.0, notify: Callable[[str], None] | None = None) -> None:
    """flock fd (exclusive, or shared); wait while another process holds it, saying so
    through ``notify`` once; give up after ``timeout`` seconds with a clear error."""
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    import time

    if notify is not None:
        notify(f"waiting for another process to finish with {path} ...")
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.02)
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise UserInputError(f"{path}: still locked by another process after "
                                     f"{timeout:.0f} s", hint="is another imagebuilder "
                                     "command editing it?") from None


# --------------------------------------------------------------------------- copies

class CopyCancelled(Exception):
    """copy_file stopped because its ``cancelled()`` said so."""


def _reflink(src_fd: int, dst_fd: int) -> None:
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


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


def data_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) of the data in [start, end) of fd (SEEK_DATA/SEEK_HOLE; the whole
    range where the filesystem cannot tell)."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole remains
                break
            return out + [(pos, end - pos)]
        if data >= end:
            break
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError:
            hole = end
        out.append((data, hole - data))
        pos = hole
    return out


def _fileno(f) -> int:
    return f if isinstance(f, int) else f.fileno()


def copy_file(src, dst, *, sparse: bool = True, reflink: bool = True,
              writeback: bool = False, cancelled: Callable[[], bool] | None = None,
              src_offset: int = 0, length: int | None = None, dst_offset: int = 0) -> str:
    """Copy src (or ``length`` bytes of it from ``src_offset``) into dst at ``dst_offset``.

    ``src``/``dst``: paths, open files or file descriptors (a dst path is created, and
    truncated for a whole-file copy). The whole-file copy is a reflink where the
    filesystem can (``reflink=False`` forbids it). Otherwise the data extents are copied
    with ``copy_file_range`` in 64 MiB chunks; where the kernel refuses (``EXDEV``,
    ``EINVAL``, ...), the rest goes through ``pread``/``pwrite``. ``sparse``: the source's
    holes are skipped, so they stay holes in a new (or zeroed) destination, which is
    extended to the full size; ``sparse=False`` writes every byte (overwriting old data).
    ``writeback``: start writing each chunk to disk as soon as it is copied
    (``sync_file_range``), so a closing fsync does not write everything at once.
    ``cancelled()``: checked between chunks; True raises :class:`CopyCancelled`.
    Returns the method: ``"reflink"``, ``"copy_file_range"`` or ``"readwrite"``.
    Errors (ENOSPC, EIO, a source shorter than expected) raise OSError.
    """
    whole = src_offset == 0 and length is None and dst_offset == 0
    with contextlib.ExitStack() as stack:
        if isinstance(src, (str, os.PathLike)):
            src = stack.enter_context(open(src, "rb"))
        if isinstance(dst, (str, os.PathLike)):
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if whole else 0)
            dfd = os.open(dst, flags, 0o644)
            stack.callback(os.close, dfd)
            dst = dfd
        sfd, dfd = _fileno(src), _fileno(dst)
        if hasattr(dst, "flush"):
            dst.flush()
        size = os.fstat(sfd).st_size
        end = size if length is None else src_offset + length
        if end > size:
            raise OSError(errno.EINVAL, f"copy range {src_offset}+{length} runs past the end "
                                        f"of the source ({size} bytes)")
        if whole and reflink:
            try:
                _reflink(sfd, dfd)
                return "reflink"
            except OSError:
                pass
        extents = data_extents(sfd, src_offset, end) if sparse else [(src_offset, end - src_offset)]
        kick = _sync_file_range() if writeback else None
        method = "copy_file_range"
        shift = dst_offset - src_offset
        for start, n in extents:
            off, stop = start, start + n
            while off < stop:
                if cancelled is not None and cancelled():
                    raise CopyCancelled()
                want = min(COPY_CHUNK, stop - off)
                done = 0
                if method == "copy_file_range":
                    try:
                        done = os.copy_file_range(sfd, dfd, want, off, off + shift)
                    except OSError as e:
                        if e.errno not in _NO_CFR:
                            raise
                        method = "readwrite"
                if done == 0:  # refused, or the source ended early: the plain way
                    done = _pread_pwrite(sfd, dfd, off, off + shift, want)
                if kick is not None:
                    kick(dfd, off + shift, done, 2)  # SYNC_FILE_RANGE_WRITE; result unused
                off += done
        if sparse and os.fstat(dfd).st_size < end + shift:
            os.ftruncate(dfd, end + shift)
        return method


def _pread_pwrite(sfd: int, dfd: int, off_in: int, off_out: int, n: int) -> int:
    done = 0
    while done < n:
        buf = os.pread(sfd, min(_RW_CHUNK, n - done), off_in + done)
        if not buf:
            raise OSError(errno.EIO, f"unexpected end of input at offset {off_in + done}")
        view = memoryview(buf)
        while view:
            k = os.pwrite(dfd, view, off_out + done)
            view = view[k:]
            done += k
    return done
