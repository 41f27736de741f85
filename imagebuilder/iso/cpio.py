"""Initrd (newc cpio) reading and writing, as coreos-installer does it.

Reading (:func:`scan_initrd`, :func:`read_initrd`): a sequence of newc archives, each
uncompressed or gzip/xz/zstd-compressed, separated by zero padding. Zero bytes after an
archive's trailer inside a compressed stream are tolerated, anything else is an error.
Only regular files are kept; the last copy of a path wins (as in the kernel). Names that
are absolute or contain a ``..`` component are rejected. Decompression is streamed and
bounded: an initrd whose archives expand beyond ``limit`` bytes is refused (a
decompression bomb never gets further than that), and only the members a caller keeps
are held in memory. The input is bytes or a seekable binary file.

Writing: :func:`write_newc` is the one newc writer (regular files, directories, symlinks,
device nodes); :func:`write_initrd` makes ONE deterministic archive of members -- sorted
by path, each missing parent directory added (mode 040755) right before the first member
inside it, ``ino`` = index, ``mtime``/``uid``/``gid`` = 0, ``nlink`` = 1, lowercase hex,
a ``TRAILER!!!`` (ino 0, mode 0, nlink 1) -- xz-compressed with preset 9 and a CRC32
check (the kernel requires CRC32). This is the byte layout of coreos-installer's
``Initrd::to_bytes`` (cpio-rs).
"""

from __future__ import annotations

import ctypes
import lzma
import os
import zlib
from collections.abc import Callable, Iterable, Mapping

from ..errors import BadImageError
from ._record import Record

NEWC_MAGIC = b"070701"
NEWC_CRC_MAGIC = b"070702"
_HEADER_LEN = 110
_TRAILER = "TRAILER!!!"
S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
DEFAULT_FILE_MODE = 0o100600
DIR_MODE = 0o040755
#: how far an initrd may expand by default (an ISO embed area holds 256 KiB compressed)
DEFAULT_LIMIT = 32 << 20
_MAX_NAME = 4096
_STEP = 1 << 20  # decompressed bytes produced per decompressor call

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class InitrdError(BadImageError):
    """The initrd data is malformed."""


class InitrdTooBig(InitrdError):
    """The initrd expands beyond the allowed size."""


class Member(Record):
    """A regular file in an initrd: contents and st_mode (type bits added if missing)."""

    data: bytes
    mode: int = DEFAULT_FILE_MODE

    @property
    def file_mode(self) -> int:
        return self.mode if self.mode & S_IFMT else S_IFREG | (self.mode & 0o7777)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def check_member_path(name: str) -> None:
    """Reject absolute paths and '..' components (path traversal)."""
    if name.startswith("/") or ".." in name.split("/"):
        raise InitrdError(f"path {name[:200]} contains path traversal")
    if not name or name in (".",):
        raise InitrdError(f"invalid member path {name!r}")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"


# --------------------------------------------------------------------------
# reading

class _Source:
    """Random access to the (compressed) input: bytes or a seekable file."""

    def __init__(self, data) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.buf: bytes | None = bytes(data)
            self.fd = -1
            self.size = len(self.buf)
        else:
            self.buf = None
            self.fd = data.fileno()
            self.size = os.fstat(self.fd).st_size

    def pread(self, off: int, n: int) -> bytes:
        if self.buf is not None:
            return self.buf[off:off + n]
        return os.pread(self.fd, max(0, min(n, self.size - off)), off)

    def data_end(self) -> int:
        """Offset after the last non-zero byte (trailing zero padding: nothing after it)."""
        if self.buf is not None:
            return len(self.buf.rstrip(b"\0"))
        end = self.size
        while end > 0:
            n = min(_STEP, end)
            chunk = self.pread(end - n, n).rstrip(b"\0")
            if chunk:
                return end - n + len(chunk)
            end -= n
        return 0

    def skip_zeros(self, pos: int, end: int) -> int:
        while pos < end:
            chunk = self.pread(pos, min(_STEP, end - pos))
            stripped = chunk.lstrip(b"\0")
            pos += len(chunk) - len(stripped)
            if stripped:
                return pos
        return pos


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise InitrdTooBig(f"initrd expands beyond the limit of {_size(self.limit)} "
                               "(a decompression bomb?)")


class _Plain:
    """An uncompressed archive read straight from the source."""

    def __init__(self, src: _Source, pos: int, budget: _Budget) -> None:
        self.src, self.pos, self.budget = src, pos, budget

    def read(self, n: int) -> bytes:
        data = self.src.pread(self.pos, n)
        if len(data) != n:
            raise InitrdError("truncated cpio archive")
        self.pos += n
        self.budget.take(n)
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.src.size:
            raise InitrdError("truncated cpio archive")
        self.pos += n

    def skip_upto(self, n: int) -> None:
        self.pos = min(self.pos + n, self.src.size)

    def rest_is_zeros(self) -> bool:
        return True  # the caller continues scanning at .pos

    def end(self) -> int:
        return self.pos


class _Stream:
    """The decompressed bytes of one gzip/xz/zstd stream starting at ``pos`` of the source,
    produced a bounded step at a time."""

    def __init__(self, src: _Source, pos: int, kind: str, budget: _Budget) -> None:
        self.src, self.start, self.kind, self.budget = src, pos, kind, budget
        self.fed = pos  # source offset of the next input byte to feed
        self.out = bytearray()
        self.eof = False
        self.stream_end: int | None = None
        self.zreader = None
        if kind == "gzip":
            self.d = zlib.decompressobj(wbits=31)
        elif kind == "xz":
            self.d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        else:
            import io

            try:
                import zstandard
            except ImportError:
                raise InitrdError("zstd-compressed initrd: the zstandard Python module is "
                                  "missing (pip install zstandard)") from None
            n = _zstd_frame_length(src, pos)
            self.stream_end = pos + n
            self.zreader = zstandard.ZstdDecompressor().stream_reader(
                _Range(src, pos, n), read_across_frames=False)

    def _more(self) -> None:
        """Decompress the next step into self.out (or set eof)."""
        want = _STEP
        try:
            if self.zreader is not None:
                chunk = self.zreader.read(want)
                if not chunk:
                    self.eof = True
                    return
            elif self.kind == "gzip":
                d = self.d
                data = d.unconsumed_tail  # (always the end of what was read so far)
                if not data:
                    data = self.src.pread(self.fed, _STEP)
                    self.fed += len(data)
                    if not data:
                        raise InitrdError("truncated gzip archive in initrd")
                start = self.fed - len(data)
                chunk = d.decompress(data, want)
                if d.eof:
                    self.eof = True
                    self.stream_end = start + len(data) - len(d.unused_data)
            else:
                d = self.d
                data = b""
                if d.needs_input:
                    data = self.src.pread(self.fed, _STEP)
                    self.fed += len(data)
                    if not data:
                        raise InitrdError("truncated xz archive in initrd")
                chunk = d.decompress(data, want)
                if d.eof:
                    self.eof = True
                    self.stream_end = self.fed - len(d.unused_data)
        except zlib.error as e:
            raise InitrdError(f"decoding gzip archive in initrd: {e}") from None
        except lzma.LZMAError as e:
            raise InitrdError(f"decoding xz archive in initrd: {e}") from None
        except InitrdError:
            raise
        except Exception as e:  # zstandard.ZstdError
            raise InitrdError(f"decoding {self.kind} archive in initrd: {e}") from None
        self.budget.take(len(chunk))
        self.out += chunk

    def read(self, n: int) -> bytes:
        while len(self.out) < n:
            if self.eof:
                raise InitrdError(f"truncated cpio archive in {self.kind} stream")
            self._more()
        data = bytes(self.out[:n])
        del self.out[:n]
        return data

    def skip(self, n: int) -> None:
        while n:
            if not self.out:
                if self.eof:
                    raise InitrdError(f"truncated cpio archive in {self.kind} stream")
                self._more()
                continue
            k = min(n, len(self.out))
            del self.out[:k]
            n -= k

    def skip_upto(self, n: int) -> None:
        while n and not (self.eof and not self.out):
            if not self.out:
                self._more()
                continue
            k = min(n, len(self.out))
            del self.out[:k]
            n -= k

    def rest_is_zeros(self) -> bool:
        while True:
            if self.out.strip(b"\0"):
                return False
            self.out.clear()
            if self.eof:
                return True
            self._more()

    def end(self) -> int:
        assert self.stream_end is not None
        return self.stream_end


class _Range:
    """A file-like view of src[pos:pos+n] (what zstandard's stream reader reads from)."""

    def __init__(self, src: _Source, pos: int, n: int) -> None:
        self.src, self.pos, self.end = src, pos, pos + n

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.end - self.pos
        data = self.src.pread(self.pos, min(size, self.end - self.pos))
        self.pos += len(data)
        return data


def _zstd_frame_length(src: _Source, pos: int) -> int:
    """Length of the zstd frame at pos by walking block headers (no decoding)."""
    start = pos
    while True:
        hdr = src.pread(pos, 8)
        if len(hdr) >= 4 and 0x184D2A50 <= int.from_bytes(hdr[:4], "little") <= 0x184D2A5F:
            pos += 8 + int.from_bytes(hdr[4:8], "little")  # skippable frame
            continue
        if hdr[:4] != _ZSTD_MAGIC or len(hdr) < 5:
            raise InitrdError("truncated zstd frame")
        fhd = hdr[4]
        fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        size = 1 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        size += (1 if single else 0, 2, 4, 8)[fcs_flag]
        pos += 4 + size
        while True:
            b = src.pread(pos, 3)
            if len(b) < 3:
                raise InitrdError("truncated zstd frame")
            bh = int.from_bytes(b, "little")
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                raise InitrdError("invalid zstd block type")
            pos += 3 + (1 if btype == 1 else bsize)
            if last:
                break
        if checksum:
            pos += 4
        if pos > src.size:
            raise InitrdError("truncated zstd frame")
        return pos - start  # one frame per archive, like coreos-installer's decoder


def _hexfields(hdr: bytes, at: int) -> list[int]:
    try:
        return [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise InitrdError(f"invalid hex field in cpio header at offset {at}") from None


def _parse_newc(r, out: dict[str, Member], names: set[str],
                keep: Callable[[str], bool] | None, keep_limit: int) -> None:
    """Parse one newc archive from reader r up to and including its trailer."""
    at = 0
    while True:
        hdr = r.read(_HEADER_LEN)
        if hdr[:6] not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            raise InitrdError(f"invalid cpio magic {hdr[:6]!r} at archive offset {at}")
        fields = _hexfields(hdr, at)
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        if namesize == 0 or namesize > _MAX_NAME:
            raise InitrdError(f"invalid cpio entry name size {namesize} at archive offset {at}")
        raw = r.read(namesize)
        if raw[-1:] != b"\0":
            raise InitrdError("cpio entry name was not NUL-terminated")
        raw = raw.rstrip(b"\0")  # dracut-cpio may pad names with NULs
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InitrdError(f"cpio entry name {raw[:100]!r} is not valid UTF-8") from None
        if name == _TRAILER:  # (a missing final padding is tolerated, as by the kernel)
            r.skip_upto(_pad4(_HEADER_LEN + namesize) + filesize + _pad4(filesize))
            return
        r.skip(_pad4(_HEADER_LEN + namesize))
        at += _HEADER_LEN + namesize + _pad4(_HEADER_LEN + namesize) + filesize + _pad4(filesize)
        if mode & S_IFMT == S_IFREG:
            check_member_path(name)
            names.add(name)
            if keep is None or keep(name):
                if filesize > keep_limit:
                    raise InitrdTooBig(f"initrd member {name[:200]} is {filesize} bytes, more "
                                       f"than the limit of {_size(keep_limit)}")
                out[name] = Member(r.read(filesize), mode)
                r.skip(_pad4(filesize))
                continue
            out.pop(name, None)
        r.skip(filesize + _pad4(filesize))


class InitrdScan(Record):
    """What :func:`scan_initrd` found: the kept members, every regular file's path, and
    the offset just past the last archive (trailing zero padding excluded)."""

    members: dict
    names: frozenset
    end: int


def scan_initrd(data, *, limit: int = DEFAULT_LIMIT,
                keep: Callable[[str], bool] | None = None,
                keep_limit: int | None = None) -> InitrdScan:
    """Read concatenated (optionally compressed) newc archives from bytes or a seekable file.

    ``keep(path)``: which regular files' contents to hold (default: all); ``limit``: the
    most bytes the archives may expand to, ``keep_limit`` the largest member held
    (default: ``limit``; :class:`InitrdTooBig` beyond either).
    """
    src = _Source(data)
    budget = _Budget(limit)
    out: dict[str, Member] = {}
    names: set[str] = set()
    pos = end_of_data = 0
    n = src.data_end()
    while pos < n:
        pos = src.skip_zeros(pos, n)
        if pos >= n:
            break
        head = src.pread(pos, 6)
        if head[:2] == _GZIP_MAGIC:
            r = _Stream(src, pos, "gzip", budget)
        elif head == _XZ_MAGIC:
            r = _Stream(src, pos, "xz", budget)
        elif head[:4] == _ZSTD_MAGIC:
            r = _Stream(src, pos, "zstd", budget)
        elif head in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            r = _Plain(src, pos, budget)
        else:
            raise InitrdError(f"unrecognized data in initrd at offset {pos}: {head!r}")
        _parse_newc(r, out, names, keep, limit if keep_limit is None else keep_limit)
        if not r.rest_is_zeros():
            raise InitrdError("found trailing garbage inside compressed archive")
        pos = end_of_data = r.end()
    return InitrdScan(out, frozenset(names), end_of_data)


def read_initrd(data, *, limit: int = DEFAULT_LIMIT) -> dict[str, Member]:
    """Every regular file of an initrd (bytes or seekable file); last copy of a path wins."""
    return scan_initrd(data, limit=limit).members


def initrd_extent(data, *, limit: int = DEFAULT_LIMIT) -> int:
    """Offset just past the last archive in data (trailing zero padding excluded)."""
    return scan_initrd(data, limit=limit, keep=lambda _p: False).end


# --------------------------------------------------------------------------
# writing

#: an archive entry: (path, st_mode, data) -- data is the file's contents, a symlink's
#: target, b"" for a directory, or (major, minor) for a device node
Entry = tuple[str, int, "bytes | tuple[int, int]"]


def write_newc(entries: Iterable[Entry], *, first_ino: int = 0, trailer_ino: int | None = 0,
               block: int = 4) -> bytes:
    """One newc archive of entries, in the order given (uid/gid/mtime 0, nlink 1).

    Inodes count up from ``first_ino``; the trailer gets ``trailer_ino`` (None: the next
    number). The archive is zero-padded to a multiple of ``block`` bytes.
    """
    out = bytearray()

    def header(ino: int, mode: int, size: int, name: bytes, rdev: tuple[int, int]) -> None:
        fields = (ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        out.extend(NEWC_MAGIC + b"".join(b"%08x" % f for f in fields) + name + b"\0")
        out.extend(b"\0" * _pad4(len(out)))

    ino = first_ino
    for path, mode, data in entries:
        name = path.encode("utf-8")
        if isinstance(data, tuple):
            header(ino, mode, 0, name, data)
        else:
            header(ino, mode, len(data), name, (0, 0))
            out.extend(data)
            out.extend(b"\0" * _pad4(len(data)))
        ino += 1
    header(ino if trailer_ino is None else trailer_ino, 0, 0, _TRAILER.encode(), (0, 0))
    out.extend(b"\0" * (-len(out) % block))
    return bytes(out)


def newc_archive(members: Mapping[str, Member]) -> bytes:
    """One uncompressed newc archive with members sorted by path and parent dirs added."""
    entries: list[Entry] = []
    cwd: list[str] = []
    for path in sorted(members, key=lambda p: p.encode("utf-8")):
        check_member_path(path)
        parent = path.split("/")[:-1]
        common = 0
        while common < min(len(cwd), len(parent)) and cwd[common] == parent[common]:
            common += 1
        cwd = cwd[:common]
        for comp in parent[common:]:
            cwd.append(comp)
            entries.append(("/".join(cwd), DIR_MODE, b""))
        m = members[path]
        entries.append((path, m.file_mode, m.data))
    return write_newc(entries)


def xz_compress(data: bytes) -> bytes:
    """xz, preset 9, CRC32 check: what coreos-installer writes (and the kernel accepts).

    Byte-identical to ``lzma.compress(data, format=FORMAT_XZ, check=CHECK_CRC32,
    preset=9)``; see :class:`_LibLzmaXz` for why it usually isn't called that way.
    """
    fast = _liblzma_xz()
    if fast is not None:
        try:
            return fast.compress(data)
        except MemoryError:
            pass
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)


def write_initrd(members: Mapping[str, Member]) -> bytes:
    """The compressed initrd for members; b"" when there are none (an all-zero area)."""
    if not members:
        return b""
    return xz_compress(newc_archive(members))


def members_from(items: Iterable[tuple[str, bytes | tuple[bytes, int] | Member]]) -> dict[str, Member]:
    """Normalize {path: bytes | (bytes, mode) | Member} into Members (paths checked)."""
    out: dict[str, Member] = {}
    for path, v in items:
        path = path.lstrip("/") if path.startswith("/") and ".." not in path.split("/") else path
        check_member_path(path)
        if isinstance(v, Member):
            out[path] = v
        elif isinstance(v, tuple):
            out[path] = Member(bytes(v[0]), int(v[1]))
        else:
            out[path] = Member(bytes(v))
    return out


# --------------------------------------------------------------------------
# xz preset 9 without the 64 MiB memset
#
# The preset-9 encoder (LZMA2, 64 MiB dictionary, bt4 match finder) allocates a
# 2^24-entry (64 MiB) hash table that must start out zeroed. Python's lzma
# module hands liblzma its own allocator, so liblzma memsets the table: 16k
# page faults, 64 MiB of RSS and tens of ms per call, whatever the input size.
# Called without an allocator (as xz(1) and coreos-installer's xz2 crate call
# it) liblzma uses calloc(), which glibc satisfies with fresh zero pages from
# mmap and does not clear; only the hash buckets the input actually hashes to
# are ever touched (a few MiB for a typical Ignition config; at most the
# 64 MiB table for large, high-entropy inputs). Same library, same preset, same
# check, so the bytes are those of lzma.compress(preset=9, CHECK_CRC32).
#
# Why not a smaller dictionary (patching the dict-size byte afterwards)? The
# bt4 hash mask is derived from the dictionary size (2^24 buckets for any
# dictionary above 16 MiB, fewer below); a smaller table adds hash collisions,
# the colliding nodes use up the match finder's search depth (48 for preset 9)
# and a match can go unfound -- the output then differs. test_iso_cpio.py has
# a 5.8 KiB input where a 256 KiB dictionary does exactly that.

class _LzmaStream(ctypes.Structure):
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_size_t),
                ("total_in", ctypes.c_uint64),
                ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_size_t),
                ("total_out", ctypes.c_uint64),
                ("allocator", ctypes.c_void_p), ("internal", ctypes.c_void_p),
                ("reserved_ptr1", ctypes.c_void_p), ("reserved_ptr2", ctypes.c_void_p),
                ("reserved_ptr3", ctypes.c_void_p), ("reserved_ptr4", ctypes.c_void_p),
                ("reserved_int1", ctypes.c_uint64), ("reserved_int2", ctypes.c_uint64),
                ("reserved_int3", ctypes.c_size_t), ("reserved_int4", ctypes.c_size_t),
                ("reserved_enum1", ctypes.c_int), ("reserved_enum2", ctypes.c_int)]


class _LibLzmaXz:
    """liblzma's easy encoder (preset 9, CRC32) with liblzma's default (calloc) allocator."""

    _LZMA_OK, _LZMA_STREAM_END, _LZMA_FINISH, _CHECK_CRC32, _PRESET = 0, 1, 3, 1, 9

    def __init__(self) -> None:
        try:  # the library Python's own _lzma module is linked against (already loaded)
            lib = ctypes.CDLL("liblzma.so.5")
        except OSError:
            from ctypes.util import find_library

            lib = ctypes.CDLL(find_library("lzma") or "liblzma.so")
        stream_p = ctypes.POINTER(_LzmaStream)
        lib.lzma_easy_encoder.argtypes = [stream_p, ctypes.c_uint32, ctypes.c_int]
        lib.lzma_easy_encoder.restype = ctypes.c_int
        lib.lzma_code.argtypes = [stream_p, ctypes.c_int]
        lib.lzma_code.restype = ctypes.c_int
        lib.lzma_end.argtypes = [stream_p]
        lib.lzma_end.restype = None
        self.lib = lib

    def compress(self, data: bytes) -> bytes:
        lib = self.lib
        data = bytes(data)
        strm = _LzmaStream()  # all zero == LZMA_STREAM_INIT; allocator NULL
        ref = ctypes.byref(strm)
        if lib.lzma_easy_encoder(ref, self._PRESET, self._CHECK_CRC32) != self._LZMA_OK:
            raise MemoryError("lzma_easy_encoder failed")
        try:
            src = ctypes.c_char_p(data)  # points into the bytes object: no copy
            strm.next_in = ctypes.cast(src, ctypes.c_void_p).value
            strm.avail_in = len(data)
            out = []
            while True:
                cap = len(data) + len(data) // 8 + 4096
                buf = ctypes.create_string_buffer(cap)
                strm.next_out = ctypes.addressof(buf)
                strm.avail_out = cap
                ret = lib.lzma_code(ref, self._LZMA_FINISH)
                out.append(buf.raw[:cap - strm.avail_out])
                if ret == self._LZMA_STREAM_END:
                    break
                if ret != self._LZMA_OK:
                    raise MemoryError(f"lzma_code returned {ret}")
            del src
            return b"".join(out)
        finally:
            lib.lzma_end(ref)


_LIBLZMA_XZ: _LibLzmaXz | None = None
_LIBLZMA_XZ_FAILED = False


def _liblzma_xz() -> _LibLzmaXz | None:
    global _LIBLZMA_XZ, _LIBLZMA_XZ_FAILED
    if _LIBLZMA_XZ is None and not _LIBLZMA_XZ_FAILED:
        try:
            _LIBLZMA_XZ = _LibLzmaXz()
        except Exception:  # no usable liblzma: plain lzma.compress() it is
            _LIBLZMA_XZ_FAILED = True
    return _LIBLZMA_XZ


__all__ = [
    "Member", "InitrdError", "InitrdTooBig", "InitrdScan", "scan_initrd", "read_initrd",
    "initrd_extent", "write_initrd", "write_newc", "newc_archive", "xz_compress", "members_from",
    "check_member_path", "DEFAULT_LIMIT",
]
