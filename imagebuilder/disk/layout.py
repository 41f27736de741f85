"""The FCOS x86_64 disk layout and seed-derived identifiers.

Partitions (FCOS, coreos-assembler's osbuild manifests): BIOS-BOOT 1 MiB, EFI-SYSTEM
127 MiB (vfat), boot 384 MiB (ext4, label ``boot``), root = the rest (label ``root``),
each aligned to 1 MiB. Every GUID, filesystem UUID, FAT volume id and ext4 hash seed
is derived from the definition's ``seed`` so the same seed gives the same image.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field

from ..errors import UserInputError
from .gpt import (ATTR_LEGACY_BIOS_BOOTABLE, BIOS_BOOT, EFI_SYSTEM, LINUX_FS, ROOT_X86_64,
                  Partition, Table)

MiB = 1 << 20
ALIGN = MiB

DEFAULT_SIZES_MIB = {"bios_boot": 1, "esp": 127, "boot": 384}
MIN_ROOT_MIB = {"ext4": 16, "xfs": 300}  # xfsprogs 6.1 refuses filesystems < 300 MB
ROOT_FS_TYPES = ("ext4", "xfs")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or '4G', '4GiB', '512M', '10737418240' (binary multiples)."""
    if isinstance(value, bool):
        raise UserInputError(f"bad size: {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise UserInputError(f"bad size {value!r}", hint="use bytes or a number with K/M/G/T")
        mult = 1024 ** " KMGT".index((m.group(2) or " ").upper())
        n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise UserInputError(f"size must be positive: {value!r}")
    return n


def derive_uuid(seed: str, purpose: str) -> uuid.UUID:
    """A stable, random-looking (version 4 format) UUID from seed + purpose."""
    h = bytearray(hashlib.sha256(f"imagebuilder:{seed}:{purpose}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(h))


def derive_volid(seed: str, purpose: str = "esp-volid") -> str:
    """8 hex digits for a FAT volume id."""
    return hashlib.sha256(f"imagebuilder:{seed}:{purpose}".encode()).hexdigest()[:8].upper()


@dataclass(frozen=True)
class FsSpec:
    partition: str  # partition name: EFI-SYSTEM, boot, root
    fstype: str  # vfat, ext4, xfs
    label: str
    uuid: str  # filesystem UUID (vfat: XXXX-XXXX form of the volume id)
    hash_seed: str | None = None  # ext4 only
    volid: str | None = None  # vfat only

    def to_dict(self) -> dict:
        d = {"type": self.fstype, "label": self.label, "uuid": self.uuid}
        if self.volid:
            d["volid"] = self.volid
        return d


@dataclass(frozen=True)
class Layout:
    table: Table
    filesystems: dict[str, FsSpec] = field(default_factory=dict)  # by partition name

    @property
    def sector_size(self) -> int:
        return self.table.sector_size

    def partition(self, name: str) -> Partition:
        return self.table.partition(name)

    def offset(self, name: str) -> int:
        return self.partition(name).offset(self.sector_size)

    def size(self, name: str) -> int:
        return self.partition(name).size(self.sector_size)

    def to_dict(self) -> dict:
        d = self.table.to_dict()
        for p in d["partitions"]:
            fs = self.filesystems.get(p["name"])
            p["filesystem"] = fs.to_dict() if fs else None
        return d


def fcos_layout(size: int | str, *, sector_size: int = 512, seed: str = "imagebuilder",
                root_fs: str = "ext4", sizes_mib: dict[str, int] | None = None) -> Layout:
    """The FCOS x86_64 layout for a disk of ``size`` bytes."""
    if sector_size not in (512, 4096):
        raise UserInputError(f"sector_size must be 512 or 4096, not {sector_size}")
    if root_fs not in ROOT_FS_TYPES:
        raise UserInputError(f"root_fs must be one of {', '.join(ROOT_FS_TYPES)}, not {root_fs!r}")
    sz = dict(DEFAULT_SIZES_MIB)
    for k, v in (sizes_mib or {}).items():
        if k not in sz:
            raise UserInputError(f"unknown partition size key {k!r} (known: {', '.join(sz)})")
        if int(v) < 1:
            raise UserInputError(f"partition size {k} must be at least 1 MiB")
        sz[k] = int(v)
    total_bytes = parse_size(size)
    total = total_bytes // sector_size
    per_mib = MiB // sector_size
    probe = Table(uuid.UUID(int=0), sector_size, total)
    last_usable = probe.last_usable_lba

    parts: list[Partition] = []
    lba = per_mib  # first partition at 1 MiB
    specs = [("BIOS-BOOT", BIOS_BOOT, sz["bios_boot"], ATTR_LEGACY_BIOS_BOOTABLE),
             ("EFI-SYSTEM", EFI_SYSTEM, sz["esp"], 0),
             ("boot", LINUX_FS, sz["boot"], 0)]
    for i, (name, tguid, mib, attrs) in enumerate(specs, start=1):
        n = mib * per_mib
        parts.append(Partition(i, tguid, derive_uuid(seed, f"part:{name}"), lba, lba + n - 1,
                               name, attrs))
        lba += n
    root_end = ((last_usable + 1) // per_mib) * per_mib - 1  # end on a MiB boundary
    root_mib = (root_end - lba + 1) // per_mib
    if root_mib < MIN_ROOT_MIB[root_fs]:
        need = (lba // per_mib + MIN_ROOT_MIB[root_fs] + 1) * MiB
        raise UserInputError(
            f"disk size {total_bytes} bytes leaves {max(root_mib, 0)} MiB for root; "
            f"{root_fs} needs at least {MIN_ROOT_MIB[root_fs]} MiB",
            hint=f"use a size of at least {-(-need // MiB)} MiB")
    parts.append(Partition(4, ROOT_X86_64, derive_uuid(seed, "part:root"), lba, root_end, "root"))
    table = Table(derive_uuid(seed, "disk"), sector_size, total, tuple(parts))
    table.validate()

    volid = derive_volid(seed)
    fss = {
        "EFI-SYSTEM": FsSpec("EFI-SYSTEM", "vfat", "EFI-SYSTEM", f"{volid[:4]}-{volid[4:]}",
                             volid=volid),
        "boot": FsSpec("boot", "ext4", "boot", str(derive_uuid(seed, "fs:boot")),
                       hash_seed=str(derive_uuid(seed, "hash:boot"))),
        "root": FsSpec("root", root_fs, "root", str(derive_uuid(seed, "fs:root")),
                       hash_seed=str(derive_uuid(seed, "hash:root")) if root_fs == "ext4" else None),
    }
    return Layout(table, fss)
