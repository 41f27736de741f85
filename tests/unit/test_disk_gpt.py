"""GPT writer/reader: round trips, CRCs, backup fallback, foreign tables (coreos-installer
fixtures), and cross-checks with sgdisk and pyparted."""

from __future__ import annotations

import lzma
import shutil
import subprocess
import uuid
import zlib
from pathlib import Path

import pytest

from imagebuilder.disk.gpt import (BIOS_BOOT, EFI_SYSTEM, LINUX_FS, ROOT_X86_64, Partition, Table,
                                   detect_sector_size, read_gpt, write_gpt)
from imagebuilder.disk.layout import fcos_layout
from imagebuilder.errors import BadImageError, UserInputError

MiB = 1 << 20


def _write(tmp_path: Path, table: Table, name: str = "disk.img") -> Path:
    p = tmp_path / name
    p.write_bytes(b"")
    write_gpt(p, table)
    return p


def _sample(ss: int) -> Table:
    per = MiB // ss
    total = 64 * MiB // ss
    parts = (
        Partition(1, BIOS_BOOT, uuid.UUID(int=1), per, 2 * per - 1, "BIOS-BOOT", 4),
        Partition(2, EFI_SYSTEM, uuid.UUID(int=2), 2 * per, 10 * per - 1, "EFI-SYSTEM"),
        Partition(4, ROOT_X86_64, uuid.UUID(int=4), 10 * per, 60 * per - 1, "röot ✓"),
    )
    return Table(uuid.UUID("12345678-1234-4234-8234-123456789abc"), ss, total, parts)


@pytest.mark.parametrize("ss", [512, 4096])
def test_round_trip(tmp_path, ss):
    t = _sample(ss)
    p = _write(tmp_path, t)
    assert p.stat().st_size == 64 * MiB
    got = read_gpt(p)
    assert got.sector_size == ss == detect_sector_size(p)
    assert got.disk_guid == t.disk_guid
    assert got.partitions == t.partitions
    assert got.first_usable_lba == (34 if ss == 512 else 6)
    assert got.last_usable_lba == t.total_sectors - (34 if ss == 512 else 6)
    assert got.partition("röot ✓").number == 4


@pytest.mark.parametrize("ss", [512, 4096])
def test_structure_bytes(tmp_path, ss):
    t = _sample(ss)
    raw = _write(tmp_path, t).read_bytes()
    # protective MBR: one 0xEE entry from LBA 1 over the whole disk, boot signature
    assert raw[510:512] == b"\x55\xaa"
    assert raw[446 + 4] == 0xEE
    assert int.from_bytes(raw[446 + 8:446 + 12], "little") == 1
    assert int.from_bytes(raw[446 + 12:446 + 16], "little") == t.total_sectors - 1
    assert raw[462:510] == bytes(48)
    hdr = raw[ss:ss + 92]
    assert hdr[:8] == b"EFI PART"
    crc = int.from_bytes(hdr[16:20], "little")
    assert zlib.crc32(hdr[:16] + b"\0\0\0\0" + hdr[20:]) == crc
    entries = raw[2 * ss:2 * ss + 128 * 128]
    assert zlib.crc32(entries) == int.from_bytes(hdr[88:92], "little")
    # backup header in the last sector points back at LBA 1
    b = raw[-ss:-ss + 92]
    assert b[:8] == b"EFI PART"
    assert int.from_bytes(b[24:32], "little") == t.total_sectors - 1
    assert int.from_bytes(b[32:40], "little") == 1
    backup_entries_lba = int.from_bytes(b[72:80], "little")
    assert raw[backup_entries_lba * ss:backup_entries_lba * ss + 128 * 128] == entries


def test_backup_used_when_primary_damaged(tmp_path):
    t = _sample(512)
    p = _write(tmp_path, t)
    with open(p, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"\xff\xff")  # corrupt primary header (CRC mismatch)
    got = read_gpt(p)
    assert got.partitions == t.partitions
    with open(p, "r+b") as f:
        f.seek(64 * MiB - 512)
        f.write(bytes(512))  # and the backup
    with pytest.raises(BadImageError, match="no valid GPT"):
        read_gpt(p)


def test_entry_crc_mismatch_rejected(tmp_path):
    p = _write(tmp_path, _sample(512))
    with open(p, "r+b") as f:
        for off in (2 * 512 + 60, 64 * MiB - 33 * 512 + 60):
            f.seek(off)
            f.write(b"X")
    with pytest.raises(BadImageError, match="CRC"):
        read_gpt(p)


def test_not_a_gpt(tmp_path):
    p = tmp_path / "zero.img"
    p.write_bytes(bytes(1 << 20))
    with pytest.raises(BadImageError):
        read_gpt(p)
    with pytest.raises(UserInputError):
        read_gpt(tmp_path / "missing.img")


def test_write_keeps_boot_code_and_data(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(b"\xab" * 440 + bytes(64 * MiB - 440))
    with open(p, "r+b") as f:
        f.seek(10 * MiB)
        f.write(b"payload")
    write_gpt(p, _sample(512))
    raw = p.read_bytes()
    assert raw[:440] == b"\xab" * 440
    assert raw[10 * MiB:10 * MiB + 7] == b"payload"


@pytest.mark.parametrize("bad", [
    lambda t: Partition(1, LINUX_FS, uuid.UUID(int=9), 1, 100),  # before first usable
    lambda t: Partition(1, LINUX_FS, uuid.UUID(int=9), 2048, t.total_sectors),  # past the end
])
def test_validation(tmp_path, bad):
    t = _sample(512)
    t2 = Table(t.disk_guid, 512, t.total_sectors, (bad(t),))
    (tmp_path / "x.img").touch()
    with pytest.raises(UserInputError):
        write_gpt(tmp_path / "x.img", t2)


def test_overlap_rejected():
    t = _sample(512)
    a, b = t.partitions[1], t.partitions[2]
    bad = Table(t.disk_guid, 512, t.total_sectors,
                (a, Partition(3, LINUX_FS, uuid.UUID(int=7), a.last_lba, b.first_lba - 1)))
    with pytest.raises(UserInputError, match="overlap"):
        bad.validate()


# ---------------------------------------------------------------- foreign tables

def _fixture(shared_fixtures: Path, name: str, tmp_path: Path) -> Path:
    out = tmp_path / name.removesuffix(".xz")
    out.write_bytes(lzma.decompress((shared_fixtures / name).read_bytes()))
    return out


def test_read_coreos_installer_gpt_512(shared_fixtures, tmp_path):
    t = read_gpt(_fixture(shared_fixtures, "gpt-512.xz", tmp_path))
    assert t.sector_size == 512
    assert t.disk_guid == uuid.UUID("9578AFDE-7B3C-4A5D-B996-B6827F5340B4")
    assert [(p.number, p.first_lba, p.last_lba, p.type_guid, p.name) for p in t.partitions] == [
        (1, 2048, 20446, LINUX_FS, "Linux filesystem")]
    assert t.partitions[0].guid == uuid.UUID("669A6739-2B53-433E-AB5F-75B633351FAB")
    assert (t.first_usable_lba, t.last_usable_lba) == (34, 20446)


def test_read_coreos_installer_gpt_4096(shared_fixtures, tmp_path):
    t = read_gpt(_fixture(shared_fixtures, "gpt-4096.xz", tmp_path))
    assert t.sector_size == 4096
    assert (t.first_usable_lba, t.last_usable_lba) == (6, 2554)
    assert [(p.number, p.first_lba, p.last_lba, p.type_guid) for p in t.partitions] == [
        (1, 256, 2554, LINUX_FS)]
    # with the wrong sector size forced there is no table
    with pytest.raises(BadImageError):
        read_gpt(tmp_path / "gpt-4096", sector_size=512)


def test_read_duplicate_partition_guids(shared_fixtures, tmp_path):
    t = read_gpt(_fixture(shared_fixtures, "gpt-512-duplicate-partition-guids.xz", tmp_path))
    assert len(t.partitions) == 2
    assert t.partitions[0].guid == t.partitions[1].guid  # reported as is, not "fixed"


def test_rewrite_foreign_table_is_identical(shared_fixtures, tmp_path):
    """Our writer reproduces sgdisk's table bytes for the same table."""
    src = _fixture(shared_fixtures, "gpt-512.xz", tmp_path)
    t = read_gpt(src)
    copy = tmp_path / "copy.img"
    shutil.copyfile(src, copy)
    write_gpt(copy, t)
    a, b = src.read_bytes(), copy.read_bytes()
    ss = 512
    for lo, hi in [(ss, 2 * ss), (2 * ss, 34 * ss), (len(a) - 33 * ss, len(a))]:
        assert a[lo:hi] == b[lo:hi]


# ---------------------------------------------------------------- cross-checks

@pytest.mark.skipif(shutil.which("sgdisk") is None, reason="needs sgdisk (gdisk)")
def test_sgdisk_verifies_fcos_layout(tmp_path):
    lay = fcos_layout("2G", seed="sg")
    p = _write(tmp_path, lay.table)
    v = subprocess.run(["sgdisk", "-v", str(p)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout + v.stderr
    info = subprocess.run(["sgdisk", "-i", "4", str(p)], capture_output=True, text=True).stdout
    assert str(lay.partition("root").guid).upper() in info
    assert "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" in info
    assert "Partition name: 'root'" in info
    disk = subprocess.run(["sgdisk", "-p", str(p)], capture_output=True, text=True).stdout
    assert str(lay.table.disk_guid).upper() in disk


def test_pyparted_reads_fcos_layout(tmp_path):
    parted = pytest.importorskip("parted")
    lay = fcos_layout("2G", seed="pp")
    p = _write(tmp_path, lay.table)
    dev = parted.getDevice(str(p))
    disk = parted.newDisk(dev)
    assert disk.type == "gpt"
    got = [(q.number, q.geometry.start, q.geometry.end, q.name) for q in disk.partitions]
    want = [(q.number, q.first_lba, q.last_lba, q.name) for q in lay.table.partitions]
    assert got == want
    assert disk.partitions[0].getFlag(parted.PARTITION_BIOS_GRUB)
    assert disk.partitions[1].getFlag(parted.PARTITION_BOOT)  # parted's name for the ESP type on GPT
