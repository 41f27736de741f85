"""Disk image plumbing for customize-image and inspect: format detection, the boot
partition, filesystem superblocks, sparse copies and block-level write-back."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from ..disk.gpt import ENTRY_SIZE, SECTOR_SIZES, Table, _parse_entries, _parse_header, read_gpt
from ..errors import BadImageError, UserInputError

CHUNK = 1 << 20
Reader = Callable[[int, int], bytes]  # read(offset, length) -> bytes


def detect_format(path: Path) -> str:
    """``raw``, ``qcow2``, ``vmdk``, ``vhdx``, ``vdi`` or ``vpc`` from the file's magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 512))
            tail = f.read(512)
    except FileNotFoundError:
        raise UserInputError(f"{path}: image not found") from None
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:4] == b"KDMV" or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if tail[:8] == b"conectix" and head[:8] != b"conectix":
        # a fixed VHD is raw data + a footer: qemu calls it vpc; libguestfs reads it
        return "vpc"
    if head[:8] == b"conectix":
        return "vpc"
    return "raw"


# --------------------------------------------------------------------------- superblocks


@dataclass(frozen=True)
class FsInfo:
    type: str | None
    label: str | None = None
    uuid: str | None = None

    def to_dict(self) -> dict:
        return {"type": self.type, "label": self.label, "uuid": self.uuid}


def probe_fs(head: bytes) -> FsInfo:
    """Filesystem type, label and UUID from the first 64 KiB of a partition."""
    if len(head) >= 2048 and head[1024 + 0x38:1024 + 0x3A] == b"\x53\xef":
        sb = head[1024:2048]
        incompat = int.from_bytes(sb[0x60:0x64], "little")
        compat = int.from_bytes(sb[0x5C:0x60], "little")
        kind = "ext4" if incompat & 0x40 or incompat & 0x200 else ("ext3" if compat & 0x4 else "ext2")
        return FsInfo(kind, sb[0x78:0x88].split(b"\0", 1)[0].decode(errors="replace"),
                      str(uuid.UUID(bytes=sb[0x68:0x78])))
    if head[:4] == b"XFSB":
        return FsInfo("xfs", head[108:120].split(b"\0", 1)[0].decode(errors="replace"),
                      str(uuid.UUID(bytes=head[32:48])))
    if len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[0x52:0x5A] == b"FAT32   ":
        label = head[0x47:0x52].decode(errors="replace").strip()
        serial = int.from_bytes(head[0x43:0x47], "little")
        return FsInfo("vfat", label if label != "NO NAME" else "", f"{serial >> 16:04X}-{serial & 0xFFFF:04X}")
    if len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[0x36:0x39] == b"FAT":
        label = head[0x2B:0x36].decode(errors="replace").strip()
        serial = int.from_bytes(head[0x27:0x2B], "little")
        return FsInfo("vfat", label if label != "NO NAME" else "", f"{serial >> 16:04X}-{serial & 0xFFFF:04X}")
    if len(head) >= 4096 and head[4086:4096] == b"SWAPSPACE2":
        return FsInfo("swap", head[1024 + 28:1024 + 44].split(b"\0", 1)[0].decode(errors="replace"),
                      str(uuid.UUID(bytes=head[1024 + 12:1024 + 28])))
    if head[:6] == b"LUKS\xba\xbe":
        return FsInfo("crypto_LUKS", None, head[168:208].split(b"\0", 1)[0].decode(errors="replace"))
    if not head.strip(b"\0"):
        return FsInfo(None)
    return FsInfo("unknown")


# --------------------------------------------------------------------------- boot partition


def table_from_reader(read: Reader, size: int) -> Table:
    """A GPT read through ``read(offset, n)`` (same rules as disk.gpt.read_gpt)."""
    for ss in SECTOR_SIZES:
        total = size // ss
        for lba in (1, total - 1):
            hdr = _parse_header(read(lba * ss, ss))
            if hdr is None or hdr["my_lba"] != lba or hdr["entry_size"] < ENTRY_SIZE:
                continue
            raw = read(hdr["entries_lba"] * ss, hdr["num_entries"] * hdr["entry_size"])
            return Table(disk_guid=hdr["disk_guid"], sector_size=ss, total_sectors=total,
                         partitions=_parse_entries(raw, hdr["entry_size"]),
                         num_entries=hdr["num_entries"], entry_size=hdr["entry_size"],
                         first_usable=hdr["first_usable"], last_usable=hdr["last_usable"])
    raise BadImageError("no valid GPT found",
                        hint="customize-image and inspect need a GPT disk image")


@dataclass(frozen=True)
class BootPartition:
    number: int
    offset: int
    size: int
    label: str


def read_table(path: Path) -> Table:
    try:
        return read_gpt(path)
    except BadImageError as e:
        raise BadImageError(f"{e.message}",
                            hint="customize-image and inspect need a GPT disk image "
                                 "(raw, or qcow2/vmdk via libguestfs)") from None


def boot_partition_from(table: Table, read: Reader, where: str) -> BootPartition:
    """The partition holding an ext4 filesystem labelled ``boot`` (GPT name ``boot`` first)."""
    ss = table.sector_size
    for p in sorted(table.partitions, key=lambda p: (p.name != "boot", p.number)):
        info = probe_fs(read(p.offset(ss), 2048))
        if info.type in ("ext2", "ext3", "ext4") and info.label == "boot":
            return BootPartition(p.number, p.offset(ss), p.size(ss), info.label)
    raise BadImageError(f"{where}: no ext4 filesystem labelled 'boot'",
                        hint="customize-image needs an FCOS-layout image: a 'boot' ext4 "
                             "partition with BLS entries")


def find_boot_partition(path: Path, table: Table | None = None) -> BootPartition:
    table = table or read_table(path)
    with open(path, "rb") as f:
        def read(off: int, n: int) -> bytes:
            f.seek(off)
            return f.read(n)

        return boot_partition_from(table, read, str(path))


# --------------------------------------------------------------------------- copies


def _extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """Data extents (offset, length) of fd within [start, end), via SEEK_DATA/SEEK_HOLE."""
    out = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no more data
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        out.append((data, hole - data))
        pos = hole
    return out


def copy_sparse(src: BinaryIO, dst: BinaryIO, offset: int, length: int, dst_offset: int) -> int:
    """Copy ``length`` bytes at ``offset`` of src to ``dst_offset`` of dst, holes kept as holes
    (dst is extended to the full length). Returns the bytes actually copied."""
    sfd, dfd = src.fileno(), dst.fileno()
    copied = 0
    for start, n in _extents(sfd, offset, offset + length):
        done = 0
        while done < n:
            k = os.copy_file_range(sfd, dfd, n - done, start + done, dst_offset + start - offset + done)
            if k == 0:
                break
            done += k
        copied += done
    end = dst_offset + length
    if os.fstat(dfd).st_size < end:
        os.ftruncate(dfd, end)
    return copied


def write_back(copy: Path, image: Path, offset: int, length: int) -> int:
    """Write the 1 MiB chunks of ``copy`` that differ from ``image`` at ``offset``. Returns bytes
    written. Only chunks with data on either side are compared."""
    written = 0
    with open(copy, "rb") as c, open(image, "r+b") as img:
        spans = _extents(c.fileno(), 0, length) + \
            [(s - offset, n) for s, n in _extents(img.fileno(), offset, offset + length)]
        chunks = sorted({i for s, n in spans for i in range(s // CHUNK, (s + n - 1) // CHUNK + 1)})
        for i in chunks:
            pos = i * CHUNK
            n = min(CHUNK, length - pos)
            c.seek(pos)
            new = c.read(n).ljust(n, b"\0")
            img.seek(offset + pos)
            old = img.read(n).ljust(n, b"\0")
            if new != old:
                img.seek(offset + pos)
                img.write(new)
                written += n
        img.flush()
        os.fsync(img.fileno())
    return written
