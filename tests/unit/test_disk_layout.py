"""FCOS layout: sizes, alignment, seed-derived identifiers."""

from __future__ import annotations

import uuid

import pytest

from imagebuilder.disk.gpt import ATTR_LEGACY_BIOS_BOOTABLE, BIOS_BOOT, EFI_SYSTEM, LINUX_FS, ROOT_X86_64
from imagebuilder.disk.layout import derive_uuid, derive_volid, fcos_layout, parse_size
from imagebuilder.errors import UserInputError

MiB = 1 << 20


@pytest.mark.parametrize("ss", [512, 4096])
def test_fcos_partitions(ss):
    lay = fcos_layout("4G", sector_size=ss, seed="s")
    t = lay.table
    assert t.sector_size == ss and t.size_bytes == 4 << 30
    names = [p.name for p in t.partitions]
    assert names == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
    assert [p.type_guid for p in t.partitions] == [BIOS_BOOT, EFI_SYSTEM, LINUX_FS, ROOT_X86_64]
    assert [p.number for p in t.partitions] == [1, 2, 3, 4]
    assert [lay.size(n) // MiB for n in names[:3]] == [1, 127, 384]
    assert lay.offset("BIOS-BOOT") == MiB
    for p in t.partitions:
        assert p.offset(ss) % MiB == 0 and p.size(ss) % MiB == 0
    root = lay.partition("root")
    assert root.first_lba == lay.partition("boot").last_lba + 1
    assert root.last_lba <= t.last_usable_lba
    assert t.last_usable_lba - root.last_lba < MiB // ss  # root takes the rest (to the last MiB)
    assert lay.partition("BIOS-BOOT").attributes == ATTR_LEGACY_BIOS_BOOTABLE
    fs = lay.filesystems
    assert (fs["boot"].fstype, fs["boot"].label) == ("ext4", "boot")
    assert (fs["root"].fstype, fs["root"].label) == ("ext4", "root")
    assert (fs["EFI-SYSTEM"].fstype, fs["EFI-SYSTEM"].label) == ("vfat", "EFI-SYSTEM")


def test_seed_determines_ids():
    a, b, c = fcos_layout("4G", seed="one"), fcos_layout("4G", seed="one"), fcos_layout("4G", seed="two")
    assert a == b
    assert a.table.disk_guid != c.table.disk_guid
    ids = [a.table.disk_guid, *(p.guid for p in a.table.partitions)]
    ids += [uuid.UUID(a.filesystems[n].uuid) for n in ("boot", "root")]
    ids += [uuid.UUID(a.filesystems[n].hash_seed) for n in ("boot", "root")]
    assert len(set(ids)) == len(ids)
    for u in ids:
        assert u.version == 4 and u.variant == uuid.RFC_4122
    assert derive_uuid("x", "disk") == derive_uuid("x", "disk") != derive_uuid("x", "disk2")
    v = derive_volid("one")
    assert len(v) == 8 and int(v, 16) >= 0
    assert a.filesystems["EFI-SYSTEM"].uuid == f"{v[:4]}-{v[4:]}"


def test_custom_sizes_and_xfs():
    lay = fcos_layout("2G", seed="s", root_fs="xfs", sizes_mib={"boot": 512, "esp": 64})
    assert lay.size("boot") == 512 * MiB and lay.size("EFI-SYSTEM") == 64 * MiB
    assert lay.filesystems["root"].fstype == "xfs" and lay.filesystems["root"].hash_seed is None


@pytest.mark.parametrize("kw,msg", [
    ({"size": "600M", "root_fs": "xfs"}, "xfs needs at least 300"),
    ({"size": "400M"}, "leaves"),
    ({"size": "4G", "sector_size": 1024}, "sector_size"),
    ({"size": "4G", "root_fs": "btrfs"}, "root_fs"),
    ({"size": "4G", "sizes_mib": {"swap": 1}}, "unknown partition"),
    ({"size": "4G", "sizes_mib": {"boot": 0}}, "at least 1 MiB"),
])
def test_layout_errors(kw, msg):
    size = kw.pop("size")
    with pytest.raises(UserInputError, match=msg):
        fcos_layout(size, **kw)


@pytest.mark.parametrize("text,n", [
    ("4G", 4 << 30), ("4GiB", 4 << 30), ("4gb", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29),
    ("10737418240", 10737418240), (123456, 123456), ("8 K", 8192), ("1T", 1 << 40),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "G", "-1G", "4X", True, 0, "4G4"])
def test_parse_size_rejects(bad):
    with pytest.raises(UserInputError):
        parse_size(bad)


def test_to_dict_lists_filesystems():
    d = fcos_layout("4G", seed="s").to_dict()
    assert d["label"] == "gpt" and d["sector_size"] == 512
    by = {p["name"]: p for p in d["partitions"]}
    assert by["BIOS-BOOT"]["filesystem"] is None
    assert by["boot"]["filesystem"]["label"] == "boot"
    assert by["root"]["type_guid"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
    assert by["EFI-SYSTEM"]["offset"] == 2 << 20
