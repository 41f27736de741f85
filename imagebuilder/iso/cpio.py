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

import contextlib
import ctypes
import lzma
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import BadImageError, ToolError

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
_NONZERO = re.compile(rb"[^\x00]")


class InitrdError(BadImageError):
    """The initrd data is malformed."""


@dataclass(frozen=True)
class Member:
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
    n = len(raw)
    while pos < n:
        # skip zero padding between archives
        m = _NONZERO.search(raw, pos)
        if m is None:
            break
        pos = m.start()
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
    preset=9)``; see :class:`_ArenaXz` for why it usually isn't called that way.
    """
    fast = _arena_xz()
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
# xz preset 9 without the per-call 64 MiB page-fault storm
#
# The preset-9 encoder (64 MiB dictionary) allocates a 64 MiB match-finder hash
# table and zeroes it on every use. Through Python's lzma module that memory is
# a fresh mmap each time: ~16k page faults, 60+ ms for a 1 KiB input. Here the
# same liblzma encoder (same preset, same check => identical bytes) runs with
# an lzma_allocator that carves its memory out of one persistent anonymous
# mapping (transparent huge pages requested), so the pages are faulted once per
# process. Anything unexpected falls back to lzma.compress().

class _LzmaAllocator(ctypes.Structure):
    _fields_ = [("alloc", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                           ctypes.c_size_t)),
                ("free", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)),
                ("opaque", ctypes.c_void_p)]


class _LzmaStream(ctypes.Structure):
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_size_t),
                ("total_in", ctypes.c_uint64),
                ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_size_t),
                ("total_out", ctypes.c_uint64),
                ("allocator", ctypes.POINTER(_LzmaAllocator)), ("internal", ctypes.c_void_p),
                ("reserved_ptr1", ctypes.c_void_p), ("reserved_ptr2", ctypes.c_void_p),
                ("reserved_ptr3", ctypes.c_void_p), ("reserved_ptr4", ctypes.c_void_p),
                ("reserved_int1", ctypes.c_uint64), ("reserved_int2", ctypes.c_uint64),
                ("reserved_int3", ctypes.c_size_t), ("reserved_int4", ctypes.c_size_t),
                ("reserved_enum1", ctypes.c_int), ("reserved_enum2", ctypes.c_int)]


class _ArenaXz:
    """liblzma's easy encoder (preset 9, CRC32) with a reusable bump-allocated arena."""

    ARENA = 1 << 30  # virtual; only touched pages count
    _LZMA_OK, _LZMA_STREAM_END, _LZMA_FINISH, _CHECK_CRC32 = 0, 1, 3, 1

    def __init__(self) -> None:
        import mmap
        import threading

        try:  # the library Python's own _lzma module is linked against (already loaded)
            self.lib = ctypes.CDLL("liblzma.so.5")
        except OSError:
            from ctypes.util import find_library

            self.lib = ctypes.CDLL(find_library("lzma") or "liblzma.so")
        self.lib.lzma_easy_encoder.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.c_uint32,
                                               ctypes.c_int]
        self.lib.lzma_easy_encoder.restype = ctypes.c_int
        self.lib.lzma_code.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.c_int]
        self.lib.lzma_code.restype = ctypes.c_int
        self.lib.lzma_end.argtypes = [ctypes.POINTER(_LzmaStream)]
        self.lib.lzma_end.restype = None
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self.map = mmap.mmap(-1, self.ARENA, flags=flags)
        with contextlib.suppress(AttributeError, OSError):
            self.map.madvise(mmap.MADV_HUGEPAGE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.used = 0
        self.lock = threading.Lock()
        alloc_t = _LzmaAllocator._fields_[0][1]
        free_t = _LzmaAllocator._fields_[1][1]
        self._alloc_cb = alloc_t(self._alloc)
        self._free_cb = free_t(lambda opaque, ptr: None)
        self.allocator = _LzmaAllocator(self._alloc_cb, self._free_cb, None)

    def _alloc(self, opaque, nmemb, size):
        n = (nmemb * size + 63) & ~63
        if self.used + n > self.ARENA:
            return None  # liblzma reports LZMA_MEM_ERROR; we fall back
        p = self.base + self.used
        self.used += n
        return p

    def compress(self, data: bytes) -> bytes:
        with self.lock:
            self.used = 0
            strm = _LzmaStream()
            strm.allocator = ctypes.pointer(self.allocator)
            if self.lib.lzma_easy_encoder(ctypes.byref(strm), 9, self._CHECK_CRC32) != self._LZMA_OK:
                raise MemoryError("lzma_easy_encoder failed")
            try:
                src = ctypes.create_string_buffer(data, len(data))
                cap = len(data) + len(data) // 2 + 4096
                dst = ctypes.create_string_buffer(cap)
                strm.next_in = ctypes.addressof(src)
                strm.avail_in = len(data)
                strm.next_out = ctypes.addressof(dst)
                strm.avail_out = cap
                ret = self.lib.lzma_code(ctypes.byref(strm), self._LZMA_FINISH)
                if ret != self._LZMA_STREAM_END:
                    raise MemoryError(f"lzma_code returned {ret}")
                return dst.raw[:strm.total_out]
            finally:
                self.lib.lzma_end(ctypes.byref(strm))
                self.used = 0


_ARENA_XZ: _ArenaXz | None = None
_ARENA_XZ_FAILED = False


def _arena_xz() -> _ArenaXz | None:
    global _ARENA_XZ, _ARENA_XZ_FAILED
    if _ARENA_XZ is None and not _ARENA_XZ_FAILED:
        try:
            _ARENA_XZ = _ArenaXz()
        except Exception:  # no usable liblzma/mmap: plain lzma.compress() it is
            _ARENA_XZ_FAILED = True
    return _ARENA_XZ


__all__ = [
    "IGNITION_PATH", "NETWORK_DIR", "Member", "InitrdError", "read_initrd", "initrd_extent",
    "write_initrd",
    "newc_archive", "xz_compress", "members_from", "check_member_path",
]
