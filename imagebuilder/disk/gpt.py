"""GUID Partition Tables written and read in pure Python.

pyparted and sgdisk cannot be told every GUID we want (pyparted: none at all), and
the image must be byte-reproducible, so the table is written here directly: a
protective MBR in LBA 0, the primary header in LBA 1, the entry array from LBA 2,
and the backup array + header at the end of the disk, with their CRC32s
(UEFI spec 2.10, section 5.3). Works for 512- and 4096-byte logical sectors.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import BadImageError, UserInputError

# Partition type GUIDs
BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649")
EFI_SYSTEM = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
LINUX_FS = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
XBOOTLDR = uuid.UUID("BC13C2FF-59E6-4262-A352-B275FD6F7172")
ROOT_X86_64 = uuid.UUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")  # DPS x86-64 root

TYPE_NAMES: dict[uuid.UUID, str] = {
    BIOS_BOOT: "BIOS boot",
    EFI_SYSTEM: "EFI system",
    LINUX_FS: "Linux filesystem",
    XBOOTLDR: "Linux extended boot",
    ROOT_X86_64: "Linux root (x86-64)",
}

ATTR_LEGACY_BIOS_BOOTABLE = 1 << 2

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
NUM_ENTRIES = 128
SECTOR_SIZES = (512, 4096)

_HDR = struct.Struct("<8sIIIIQQQQ16sQIII")  # 92 bytes
_ENT = struct.Struct("<16s16sQQQ72s")  # 128 bytes


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based slot in the entry array
    type_guid: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int  # inclusive
    name: str = ""
    attributes: int = 0

    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    def offset(self, sector_size: int) -> int:
        return self.first_lba * sector_size

    def size(self, sector_size: int) -> int:
        return self.sectors() * sector_size

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type_guid, str(self.type_guid).upper())


@dataclass(frozen=True)
class Table:
    disk_guid: uuid.UUID
    sector_size: int
    total_sectors: int  # whole disk, in logical sectors
    partitions: tuple[Partition, ...] = field(default_factory=tuple)
    num_entries: int = NUM_ENTRIES
    entry_size: int = ENTRY_SIZE
    # as read from a header; 0 = the standard values for this geometry
    first_usable: int = 0
    last_usable: int = 0

    @property
    def entry_array_sectors(self) -> int:
        return -(-self.num_entries * self.entry_size // self.sector_size)

    @property
    def first_usable_lba(self) -> int:
        return self.first_usable or 2 + self.entry_array_sectors

    @property
    def last_usable_lba(self) -> int:
        return self.last_usable or self.total_sectors - 2 - self.entry_array_sectors

    @property
    def size_bytes(self) -> int:
        return self.total_sectors * self.sector_size

    def partition(self, key: int | str) -> Partition:
        for p in self.partitions:
            if p.number == key or p.name == key:
                return p
        raise KeyError(key)

    def to_dict(self) -> dict:
        ss = self.sector_size
        return {
            "label": "gpt",
            "disk_guid": str(self.disk_guid),
            "sector_size": ss,
            "size": self.size_bytes,
            "first_usable_lba": self.first_usable_lba,
            "last_usable_lba": self.last_usable_lba,
            "partitions": [
                {"number": p.number, "name": p.name, "type_guid": str(p.type_guid).upper(),
                 "type": p.type_name, "guid": str(p.guid), "start_lba": p.first_lba,
                 "last_lba": p.last_lba, "offset": p.offset(ss), "size": p.size(ss),
                 "attributes": p.attributes}
                for p in self.partitions
            ],
        }

    def validate(self) -> None:
        if self.sector_size not in SECTOR_SIZES:
            raise UserInputError(f"sector size must be 512 or 4096, not {self.sector_size}")
        if self.first_usable_lba > self.last_usable_lba:
            raise UserInputError("disk too small for a GPT")
        seen: set[int] = set()
        spans: list[tuple[int, int, int]] = []
        for p in self.partitions:
            if not 1 <= p.number <= self.num_entries or p.number in seen:
                raise UserInputError(f"bad or duplicate partition number {p.number}")
            seen.add(p.number)
            if not self.first_usable_lba <= p.first_lba <= p.last_lba <= self.last_usable_lba:
                raise UserInputError(
                    f"partition {p.number} ({p.first_lba}..{p.last_lba}) outside the usable "
                    f"range {self.first_usable_lba}..{self.last_usable_lba}")
            if len(p.name.encode("utf-16-le")) > 72:
                raise UserInputError(f"partition name too long: {p.name!r}")
            spans.append((p.first_lba, p.last_lba, p.number))
        spans.sort()
        for a, b in zip(spans, spans[1:]):
            if b[0] <= a[1]:
                raise UserInputError(f"partitions {a[2]} and {b[2]} overlap")


# ---------------------------------------------------------------- writing

def _entry_array(table: Table) -> bytes:
    buf = bytearray(table.num_entries * table.entry_size)
    for p in table.partitions:
        ent = _ENT.pack(p.type_guid.bytes_le, p.guid.bytes_le, p.first_lba, p.last_lba,
                        p.attributes, p.name.encode("utf-16-le").ljust(72, b"\0"))
        o = (p.number - 1) * table.entry_size
        buf[o:o + ENTRY_SIZE] = ent
    return bytes(buf)


def _header(table: Table, *, backup: bool, entries_crc: int) -> bytes:
    n = table.entry_array_sectors
    my_lba = table.total_sectors - 1 if backup else 1
    alt_lba = 1 if backup else table.total_sectors - 1
    entries_lba = table.total_sectors - 1 - n if backup else 2
    fields = [SIGNATURE, REVISION, HEADER_SIZE, 0, 0, my_lba, alt_lba,
              table.first_usable_lba, table.last_usable_lba, table.disk_guid.bytes_le,
              entries_lba, table.num_entries, table.entry_size, entries_crc]
    raw = _HDR.pack(*fields)
    fields[3] = zlib.crc32(raw)
    return _HDR.pack(*fields).ljust(table.sector_size, b"\0")


def protective_mbr(table: Table, existing: bytes | None = None) -> bytes:
    """LBA 0: keep the boot code area (0..440) of ``existing``; one 0xEE partition."""
    mbr = bytearray(existing[:512] if existing and len(existing) >= 512 else bytes(512))
    mbr[440:446] = b"\0" * 6  # disk signature + reserved: zero, like sgdisk
    size = min(table.total_sectors - 1, 0xFFFFFFFF)
    part = struct.pack("<B3sB3sII", 0x00, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[446:462] = part
    mbr[462:510] = bytes(48)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def write_gpt(path: str | os.PathLike[str], table: Table) -> None:
    """Write the protective MBR and both GPT copies into an existing file of the table's size.

    Bytes outside LBA 0 (except its boot code, which is kept), the two headers and the
    two entry arrays are not touched. The file is extended (sparsely) if it is short.
    """
    table.validate()
    ss = table.sector_size
    entries = _entry_array(table)
    crc = zlib.crc32(entries)
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size < table.size_bytes:
            f.truncate(table.size_bytes)
        old = f.read(512)
        f.seek(0)
        f.write(protective_mbr(table, old).ljust(ss, b"\0") if ss > 512 else protective_mbr(table, old))
        f.seek(ss)
        f.write(_header(table, backup=False, entries_crc=crc))
        f.seek(2 * ss)
        f.write(entries.ljust(table.entry_array_sectors * ss, b"\0"))
        f.seek((table.total_sectors - 1 - table.entry_array_sectors) * ss)
        f.write(entries.ljust(table.entry_array_sectors * ss, b"\0"))
        f.seek((table.total_sectors - 1) * ss)
        f.write(_header(table, backup=True, entries_crc=crc))


# ---------------------------------------------------------------- reading

def _parse_header(raw: bytes) -> dict | None:
    if len(raw) < HEADER_SIZE or raw[:8] != SIGNATURE:
        return None
    v = list(_HDR.unpack(raw[:HEADER_SIZE]))
    hsize = v[2]
    if not HEADER_SIZE <= hsize <= len(raw):
        return None
    want = v[3]
    check = bytearray(raw[:hsize])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != want:
        return None
    return {"my_lba": v[5], "alt_lba": v[6], "first_usable": v[7], "last_usable": v[8],
            "disk_guid": uuid.UUID(bytes_le=v[9]), "entries_lba": v[10], "num_entries": v[11],
            "entry_size": v[12], "entries_crc": v[13]}


def _read_at(f, off: int, n: int) -> bytes:
    f.seek(off)
    return f.read(n)


def _parse_entries(raw: bytes, entry_size: int) -> tuple[Partition, ...]:
    parts = []
    for i in range(len(raw) // entry_size):
        ent = raw[i * entry_size:i * entry_size + ENTRY_SIZE]
        t, g, first, last, attrs, name = _ENT.unpack(ent)
        if t == bytes(16):
            continue
        nm = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(Partition(i + 1, uuid.UUID(bytes_le=t), uuid.UUID(bytes_le=g), first, last,
                               nm, attrs))
    return tuple(parts)


def detect_sector_size(path: str | os.PathLike[str]) -> int:
    with open(path, "rb") as f:
        for ss in SECTOR_SIZES:
            if _read_at(f, ss, 8) == SIGNATURE:
                return ss
    raise BadImageError(f"{path}: no GPT header found (tried 512- and 4096-byte sectors)")


def read_gpt(path: str | os.PathLike[str], sector_size: int | None = None) -> Table:
    """Read a GPT from an image file (or block device). Falls back to the backup header
    when the primary is damaged. Raises BadImageError if no valid table is found."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserInputError(f"{path}: not found") from None
    with f:
        size = f.seek(0, os.SEEK_END)
        sizes = (sector_size,) if sector_size else SECTOR_SIZES
        errors = []
        for ss in sizes:
            if size < 3 * ss:
                continue
            total = size // ss
            for lba in (1, total - 1):
                hdr = _parse_header(_read_at(f, lba * ss, ss))
                if hdr is None:
                    continue
                if hdr["my_lba"] != lba:
                    errors.append(f"{ss}: header at LBA {lba} claims LBA {hdr['my_lba']}")
                    continue
                if hdr["entry_size"] < ENTRY_SIZE or hdr["entry_size"] % 8 or hdr["num_entries"] > 65536:
                    errors.append(f"{ss}: bad entry geometry")
                    continue
                raw = _read_at(f, hdr["entries_lba"] * ss, hdr["num_entries"] * hdr["entry_size"])
                if zlib.crc32(raw) != hdr["entries_crc"]:
                    errors.append(f"{ss}: entry array CRC mismatch at LBA {hdr['entries_lba']}")
                    continue
                return Table(disk_guid=hdr["disk_guid"], sector_size=ss, total_sectors=total,
                             partitions=_parse_entries(raw, hdr["entry_size"]),
                             num_entries=hdr["num_entries"], entry_size=hdr["entry_size"],
                             first_usable=hdr["first_usable"], last_usable=hdr["last_usable"])
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise BadImageError(f"{path}: no valid GPT found{detail}")


def with_partitions(table: Table, parts: list[Partition]) -> Table:
    return replace(table, partitions=tuple(parts))
