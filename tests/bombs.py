"""Decompression bombs for tests, made in milliseconds instead of compressing gigabytes.

``xz_bomb(head, zeros, tail)`` and ``gzip_bomb(head, zeros, tail)`` return a compressed
stream that expands to ``head + b"\\0" * zeros + tail``: one piece of zeros is compressed
once and repeated (xz: identical independent Blocks and an Index listing them; gzip:
identical deflate pieces after full flushes, which reset the window and align to a byte).
"""

from __future__ import annotations

import lzma
import struct
import zlib

_PIECE = 8 << 20


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _one_block(data: bytes) -> tuple[bytes, int, int]:
    """(block bytes incl. padding and check, unpadded size, uncompressed size)."""
    s = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=6)
    backward = (struct.unpack("<I", s[-8:-4])[0] + 1) * 4
    index = s[-12 - backward:-12]
    assert index[0] == 0
    count, pos = _read_varint(index, 1)
    assert count == 1
    unpadded, pos = _read_varint(index, pos)
    size, pos = _read_varint(index, pos)
    padded = (unpadded + 3) // 4 * 4
    return s[12:12 + padded], unpadded, size


def xz_parts(parts: list) -> bytes:
    """An xz stream expanding to the concatenation of parts: bytes as they are, an int n
    as n zero bytes (8 MiB zero blocks compressed once and repeated)."""
    blocks: list[tuple[bytes, int, int]] = []
    zero_piece = None
    for part in parts:
        if isinstance(part, bytes):
            if part:
                blocks.append(_one_block(part))
            continue
        n, rest = divmod(part, _PIECE)
        if n:
            zero_piece = zero_piece or _one_block(b"\0" * _PIECE)
            blocks += [zero_piece] * n
        if rest:
            blocks.append(_one_block(b"\0" * rest))
    flags = b"\x00\x01"  # CRC32
    header = b"\xfd7zXZ\x00" + flags + struct.pack("<I", zlib.crc32(flags))
    index = bytearray(b"\x00" + _varint(len(blocks)))
    for _b, unpadded, size in blocks:
        index += _varint(unpadded) + _varint(size)
    index += b"\0" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1)
    footer = struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"
    return header + b"".join(b for b, _u, _s in blocks) + bytes(index) + footer


def xz_bomb(head: bytes, zeros: int, tail: bytes = b"") -> bytes:
    return xz_parts([head, zeros, tail])


def gzip_bomb(head: bytes, zeros: int, tail: bytes = b"") -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]
    crc = zlib.crc32(head)
    out.append(c.compress(head) + c.flush(zlib.Z_FULL_FLUSH))
    zero_piece = b"\0" * (1 << 20)
    piece = c.compress(zero_piece) + c.flush(zlib.Z_FULL_FLUSH)
    piece_crc = zlib.crc32(zero_piece)
    n, rest = divmod(zeros, len(zero_piece))
    out.append(piece * n)
    for _ in range(n):  # (crc32_combine is not in Python's zlib)
        crc = zlib.crc32(zero_piece, crc)
    del piece_crc
    last = b"\0" * rest + tail
    out.append(c.compress(last) + c.flush(zlib.Z_FINISH))
    crc = zlib.crc32(last, crc)
    total = len(head) + zeros + len(tail)
    out.append(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return b"".join(out)


def newc_header(name: str, size: int, mode: int = 0o100644) -> bytes:
    """A newc header (and padded name) for a member of ``size`` bytes."""
    nb = name.encode() + b"\0"
    fields = (1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(nb), 0)
    hdr = b"070701" + b"".join(b"%08x" % f for f in fields) + nb
    return hdr + b"\0" * (-len(hdr) % 4)


def trailer() -> bytes:
    return newc_header("TRAILER!!!", 0, 0)
