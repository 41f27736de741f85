"""Initrd (newc cpio) reading and writing, as coreos-installer does it.

Reading (:func:`read_initrd`): a sequence of newc archives, each uncompressed or
gzip/xz/zstd-compressed, separated by zero padding. Zero bytes after an
archive's trailer inside a compressed stream are tolerated, anything else is an
error. Only regular files are kept; the last copy of a path wins (as in the
kernel). Names that are absolute or contain a ``..`` component are rejected.

Writing (:func:`write_initrd`): ONE deterministic newc archive -- members
sorted by path, each missing parent directory added (mode 040755) right before
the first member inside it, ``ino`` = index, ``mtime``/``uid``/``gid`` = 0,
``nlink`` = 1, lowercase hex, a ``TRAILER!!!`` (ino 0, mode 0, nlink 1) -- then
xz-compressed with preset 9 and a CRC32 check (the kernel requires CRC32).
This is the byte layout of coreos-installer's ``Initrd::to_bytes`` (cpio-rs).
"""

from __future__ import annotations

import ctypes
import lzma
import zlib
from collections.abc import Iterable, Mapping

from ..errors import BadImageError, ToolError
from ._record import Record

IGNITION_PATH = "config.ign"
NETWORK_DIR = "etc/coreos-firstboot-network"

NEWC_MAGIC = b"070701"
NEWC_CRC_MAGIC = b"070702"
_HEADER_LEN = 110
_TRAILER = "TRAILER!!!"
S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
DEFAULT_FILE_MODE = 0o100600
DIR_MODE = 0o040755

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class InitrdError(BadImageError):
    """The initrd data is malformed."""


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
        raise InitrdError(f"path {name} contains path traversal")
    if not name or name in (".",):
        raise InitrdError(f"invalid member path {name!r}")


# --------------------------------------------------------------------------
# reading

def _parse_newc(buf: bytes, pos: int, out: dict[str, Member]) -> int:
    """Parse one newc archive starting at buf[pos]; fill out; return the end offset."""
    while True:
        if pos + _HEADER_LEN > len(buf):
            raise InitrdError("truncated cpio header")
        magic = buf[pos:pos + 6]
        if magic not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            raise InitrdError(f"invalid cpio magic {magic!r} at offset {pos}")
        try:
            fields = [int(buf[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise InitrdError(f"invalid hex field in cpio header at offset {pos}") from None
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = pos + _HEADER_LEN
        name_end = name_start + namesize
        if namesize == 0 or name_end > len(buf):
            raise InitrdError("truncated cpio entry name")
        raw = buf[name_start:name_end]
        if raw[-1:] != b"\0":
            raise InitrdError("cpio entry name was not NUL-terminated")
        raw = raw.rstrip(b"\0")  # dracut-cpio may pad names with NULs
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InitrdError(f"cpio entry name {raw!r} is not valid UTF-8") from None
        data_start = name_end + _pad4(_HEADER_LEN + namesize)
        data_end = data_start + filesize
        if data_end > len(buf):
            raise InitrdError(f"truncated cpio entry {name}")
        pos = data_end + _pad4(filesize)
        if name == _TRAILER:
            return min(pos, len(buf))
        if mode & S_IFMT == S_IFREG:
            check_member_path(name)
            out[name] = Member(bytes(buf[data_start:data_end]), mode)


def _zstd_frame_length(buf: bytes, pos: int) -> int:
    """Length of the zstd frame(s) at buf[pos:] by walking block headers (no decoding)."""
    start = pos
    while pos + 4 <= len(buf):
        magic = int.from_bytes(buf[pos:pos + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame
            size = int.from_bytes(buf[pos + 4:pos + 8], "little")
            pos += 8 + size
            continue
        if buf[pos:pos + 4] != _ZSTD_MAGIC:
            break
        fhd = buf[pos + 4]
        fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        hdr = 1 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        hdr += (1 if single else 0, 2, 4, 8)[fcs_flag]
        pos += 4 + hdr
        while True:
            if pos + 3 > len(buf):
                raise InitrdError("truncated zstd frame")
            bh = int.from_bytes(buf[pos:pos + 3], "little")
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            pos += 3 + (1 if btype == 1 else bsize)
            if btype == 3:
                raise InitrdError("invalid zstd block type")
            if last:
                break
        if checksum:
            pos += 4
        break  # one frame per archive, like coreos-installer's single-frame decoder
    if pos > len(buf):
        raise InitrdError("truncated zstd frame")
    return pos - start


def _zstd_decompress(frame: bytes) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        zstandard = None
    if zstandard is not None:
        return zstandard.ZstdDecompressor().decompressobj().decompress(frame)
    from ..run import run

    try:
        return run(["zstd", "-d", "-c", "-q"], input=frame).stdout
    except ToolError as e:
        raise InitrdError(f"decoding zstd archive in initrd: {e.message}") from None


def _decompress_one(buf: bytes, pos: int) -> tuple[bytes, int]:
    """Decompress the single stream at buf[pos:]; return (data, end offset of the stream)."""
    head = buf[pos:pos + 6]
    if head[:2] == _GZIP_MAGIC:
        d = zlib.decompressobj(wbits=31)
        try:
            data = d.decompress(buf[pos:])
        except zlib.error as e:
            raise InitrdError(f"decoding gzip archive in initrd: {e}") from None
        if not d.eof:
            raise InitrdError("truncated gzip archive in initrd")
        return data, len(buf) - len(d.unused_data)
    if head == _XZ_MAGIC:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            data = d.decompress(buf[pos:])
        except lzma.LZMAError as e:
            raise InitrdError(f"decoding xz archive in initrd: {e}") from None
        if not d.eof:
            raise InitrdError("truncated xz archive in initrd")
        return data, len(buf) - len(d.unused_data)
    if head[:4] == _ZSTD_MAGIC:
        n = _zstd_frame_length(buf, pos)
        return _zstd_decompress(bytes(buf[pos:pos + n])), pos + n
    raise AssertionError("not compressed")


def read_initrd(data: bytes) -> dict[str, Member]:
    """Read concatenated (optionally compressed) newc archives; last copy of a path wins."""
    return _scan(bytes(data))[0]


def initrd_extent(data: bytes) -> int:
    """Offset just past the last archive in data (trailing zero padding excluded)."""
    return _scan(bytes(data))[1]


def _scan(raw: bytes) -> tuple[dict[str, Member], int]:
    out: dict[str, Member] = {}
    pos = 0
    end_of_data = 0
    n = len(raw.rstrip(b"\0"))  # trailing zero padding (most of an embed area): nothing after it
    while pos < n:
        if raw[pos] == 0:  # skip zero padding between archives (C speed, unlike a regex)
            pos = n - len(raw[pos:n].lstrip(b"\0"))
        head = raw[pos:pos + 6]
        if head[:2] == _GZIP_MAGIC or head == _XZ_MAGIC or head[:4] == _ZSTD_MAGIC:
            inner, pos = _decompress_one(raw, pos)
            end = _parse_newc(inner, 0, out)
            if inner[end:].strip(b"\0"):
                raise InitrdError("found trailing garbage inside compressed archive")
        elif head in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            pos = _parse_newc(raw, pos, out)
        else:
            raise InitrdError(f"unrecognized data in initrd at offset {pos}: {head!r}")
        end_of_data = pos
    return out, end_of_data


# --------------------------------------------------------------------------
# writing

def _newc_header(name: str, *, ino: int, mode: int, filesize: int, nlink: int = 1) -> bytes:
    bname = name.encode("utf-8")
    namesize = len(bname) + 1
    fields = (ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0)
    hdr = NEWC_MAGIC + b"".join(b"%08x" % f for f in fields) + bname + b"\0"
    return hdr + b"\0" * _pad4(len(hdr))


def newc_archive(members: Mapping[str, Member]) -> bytes:
    """One uncompressed newc archive with members sorted by path and parent dirs added."""
    entries: list[tuple[str, int, bytes]] = []
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
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries):
        out += _newc_header(name, ino=ino, mode=mode, filesize=len(data))
        out += data
        out += b"\0" * _pad4(len(data))
    out += _newc_header(_TRAILER, ino=0, mode=0, filesize=0, nlink=1)
    return bytes(out)


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
    "IGNITION_PATH", "NETWORK_DIR", "Member", "InitrdError", "read_initrd", "initrd_extent",
    "write_initrd",
    "newc_archive", "xz_compress", "members_from", "check_member_path",
]
