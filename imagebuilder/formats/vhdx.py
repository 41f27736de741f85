"""Dynamic VHDX (Hyper-V): ``qemu-img convert -O vhdx`` (subformat dynamic), made stable.

QEMU's VHDX differs between two runs on the same raw in these places, all replaced from
the seed (checksums recomputed with CRC-32C, as the format requires):

* both headers (64 KiB and 128 KiB): sequence number (random start), FileWriteGuid,
  DataWriteGuid;
* the log entries QEMU wrote while creating the file (replayed already: the headers'
  LogGuid is zero, so no reader replays them): each entry's LogGuid;
* the metadata item Page83Data (the disk's SCSI identity).
"""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path

from ..errors import BadImageError
from .common import (TiB, Artifact, check_limit, named_temp_output, qemu_img_convert, raw_size,
                     seed_bytes, seed_uuid)

FORMAT = "vhdx"
MAX_SIZE = 64 * TiB  # VHDX's limit
HEADER_OFFSETS = (64 * 1024, 128 * 1024)
HEADER_SIZE = 4096
REGION_TABLE_OFFSET = 192 * 1024
METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
PAGE83_ITEM = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOG_ENTRY_ALIGN = 4096


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _guid_le(u: uuid.UUID) -> bytes:
    return u.bytes_le


def _with_checksum(block: bytearray, at: int = 4) -> bytearray:
    block[at:at + 4] = b"\0\0\0\0"
    block[at:at + 4] = struct.pack("<I", crc32c(bytes(block)))
    return block


def read_headers(f) -> list[dict]:
    out = []
    for off in HEADER_OFFSETS:
        f.seek(off)
        h = f.read(HEADER_SIZE)
        if h[:4] != b"head":
            raise BadImageError(f"no VHDX header at offset {off}")
        sig, csum, seq = struct.unpack_from("<4sIQ", h)
        if crc32c(h[:4] + b"\0\0\0\0" + h[8:]) != csum:
            raise BadImageError(f"VHDX header at offset {off}: bad checksum")
        guids = [uuid.UUID(bytes_le=h[16 + 16 * i:32 + 16 * i]) for i in range(3)]
        log_version, version, log_length, log_offset = struct.unpack_from("<HHIQ", h, 64)
        out.append({"offset": off, "sequence": seq, "file_write": guids[0], "data_write": guids[1],
                    "log_guid": guids[2], "log_offset": log_offset, "log_length": log_length,
                    "version": version})
    return out


def _metadata_offset(f) -> int:
    f.seek(REGION_TABLE_OFFSET)
    r = f.read(64 * 1024)
    if r[:4] != b"regi":
        raise BadImageError("no VHDX region table")
    (count,) = struct.unpack_from("<I", r, 8)
    for i in range(min(count, 2047)):
        g = uuid.UUID(bytes_le=r[16 + 32 * i:32 + 32 * i])
        off, _length, _req = struct.unpack_from("<QII", r, 32 + 32 * i)
        if g == METADATA_REGION:
            return off
    raise BadImageError("VHDX region table has no metadata region")


def patch(path: Path, seed: str) -> None:
    """Replace QEMU's random identifiers with seed-derived ones (see the module doc)."""
    with open(path, "r+b") as f:
        headers = read_headers(f)
        if any(h["log_guid"].int for h in headers):
            raise BadImageError(f"{path}: VHDX log not replayed (LogGuid set)")
        # headers: keep their order (the current one has the higher sequence number)
        base = int.from_bytes(seed_bytes(seed, "vhdx-sequence", 4), "little")
        ranked = sorted(headers, key=lambda h: h["sequence"])
        for rank, h in enumerate(ranked):
            f.seek(h["offset"])
            block = bytearray(f.read(HEADER_SIZE))
            block[8:16] = struct.pack("<Q", base + rank)
            block[16:32] = _guid_le(seed_uuid(seed, "vhdx-file-write"))
            block[32:48] = _guid_le(seed_uuid(seed, f"vhdx-data-write-{rank}"))
            f.seek(h["offset"])
            f.write(_with_checksum(block))
        # stale log entries
        log_off, log_len = ranked[-1]["log_offset"], ranked[-1]["log_length"]
        pos, n = log_off, 0
        while pos + 64 <= log_off + log_len:
            f.seek(pos)
            head = f.read(64)
            if head[:4] != b"loge":
                pos += LOG_ENTRY_ALIGN
                continue
            (entry_len,) = struct.unpack_from("<I", head, 8)
            if entry_len < LOG_ENTRY_ALIGN or entry_len % LOG_ENTRY_ALIGN or pos + entry_len > log_off + log_len:
                raise BadImageError(f"{path}: VHDX log entry at {pos} has a bad length {entry_len}")
            f.seek(pos)
            entry = bytearray(f.read(entry_len))
            entry[32:48] = _guid_le(seed_uuid(seed, f"vhdx-log-{n}"))
            f.seek(pos)
            f.write(_with_checksum(entry))
            pos += entry_len
            n += 1
        # Page83Data
        meta = _metadata_offset(f)
        f.seek(meta)
        table = f.read(64 * 1024)
        if table[:8] != b"metadata":
            raise BadImageError(f"{path}: no VHDX metadata table")
        (count,) = struct.unpack_from("<H", table, 10)
        for i in range(min(count, 2047)):
            e = 32 + 32 * i
            if uuid.UUID(bytes_le=table[e:e + 16]) == PAGE83_ITEM:
                item_off, item_len = struct.unpack_from("<II", table, e + 16)
                if item_len != 16:
                    raise BadImageError(f"{path}: VHDX Page83Data item of {item_len} bytes")
                f.seek(meta + item_off)
                f.write(_guid_le(seed_uuid(seed, "vhdx-page83")))
                break


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, seed: str,
            force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    size = raw_size(raw)
    check_limit(FORMAT, size, MAX_SIZE)
    with named_temp_output(dest, force=force) as tmp:
        qemu_img_convert(raw, tmp, "vhdx", {"subformat": "dynamic"})
        patch(tmp, seed)
    return Artifact(dest, FORMAT, size, patched=["header sequence numbers", "FileWriteGuid",
                                                 "DataWriteGuid", "log entry LogGuids", "Page83Data"])
