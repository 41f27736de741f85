"""Every cloud format made from a small GPT raw, checked by the real tools: qemu-img info /
check / compare, our Azure VHD validator, GNU tar listing and extraction of the GCE
tarball, the OVA member order and manifest; two conversions with one seed give the same
bytes; bad inputs fail early, leaving nothing behind."""

from __future__ import annotations

import gzip
import json
import os
import random
import struct
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from imagebuilder import formats
from imagebuilder.disk.gpt import LINUX_FS, Partition, Table, read_gpt, write_gpt
from imagebuilder.errors import (BadImageError, InvalidConfigError, ToolError, ToolMissingError,
                                 UserInputError)
from imagebuilder.formats import common, compress, gce, ova, qcow2, vhd, vhdx, vmdk

MiB, GiB = 1 << 20, 1 << 30
SEED, EPOCH = "formats-test", 1700000000


def make_raw(path: Path, size: int) -> Path:
    """A GPT disk with two partitions and 4 MiB of pseudo-random data in 4 KiB pieces."""
    with open(path, "wb") as f:
        f.truncate(size)
    total = size // 512
    parts = (Partition(1, LINUX_FS, uuid.UUID(int=1), 2048, 2048 + 8191, "one"),
             Partition(2, LINUX_FS, uuid.UUID(int=2), 2048 + 8192, total - 34 - 1, "two"))
    write_gpt(path, Table(uuid.UUID(int=3), 512, total, parts))
    rng = random.Random(7)
    with open(path, "r+b") as f:
        for off in range(MiB, 5 * MiB, 64 * 1024):
            f.seek(off)
            f.write(rng.randbytes(4096))
        f.seek(size - 40 * MiB // 10)
        f.write(b"tail data" * 100)
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw") / "disk.raw", 64 * MiB)


@pytest.fixture(scope="module")
def odd_raw(tmp_path_factory) -> Path:
    """Not a whole MiB (62 MiB - 512 bytes)."""
    return make_raw(tmp_path_factory.mktemp("odd") / "odd.raw", 62 * MiB - 512)


def info(path: Path, fmt: str | None = None) -> dict:
    argv = ["qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    return json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)


def qemu_check(path: Path, fmt: str) -> None:
    subprocess.run(["qemu-img", "check", "-f", fmt, str(path)], check=True, capture_output=True)


def same_content(raw: Path, image: Path, fmt: str) -> bool:
    proc = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(raw), str(image)],
                          capture_output=True, text=True)
    return proc.returncode == 0


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- qcow2

@pytest.mark.parametrize("compression", [False, True])
def test_qcow2(raw, tmp_path, compression):
    out = tmp_path / "d.qcow2"
    art = qcow2.convert(raw, out, compression=compression)
    i = info(out)
    assert i["format"] == "qcow2" and i["virtual-size"] == raw.stat().st_size == art.virtual_size
    assert i["format-specific"]["data"]["compat"] == "1.1"
    qemu_check(out, "qcow2")
    assert same_content(raw, out, "qcow2")
    if compression:
        plain = qcow2.convert(raw, tmp_path / "plain.qcow2")
        assert out.stat().st_size < plain.path.stat().st_size


# --------------------------------------------------------------------------- vmdk

def test_vmdk_stream_optimized_with_seeded_cid(raw, tmp_path):
    out = tmp_path / "d.vmdk"
    vmdk.convert(raw, out, seed=SEED)
    i = info(out)
    assert i["format"] == "vmdk" and i["virtual-size"] == raw.stat().st_size
    assert i["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert i["format-specific"]["data"]["cid"] == vmdk.derived_cid(SEED)
    desc, _, _ = vmdk.read_descriptor(out)
    assert desc["ddb.adapterType"] == "lsilogic" and desc["ddb.virtualHWVersion"] == "6"
    assert desc["extents"][0]["file"] == "d.vmdk"  # its own name, not the temp file's
    qemu_check(out, "vmdk")
    assert same_content(raw, out, "vmdk")
    other = vmdk.convert(raw, tmp_path / "d2.vmdk", seed="other")
    assert info(other.path)["format-specific"]["data"]["cid"] == vmdk.derived_cid("other") != vmdk.derived_cid(SEED)


# --------------------------------------------------------------------------- vhd

@pytest.mark.parametrize("which", ["raw", "odd_raw"])
def test_vhd_fixed_azure_rules_and_both_writers_agree(which, request, tmp_path):
    src: Path = request.getfixturevalue(which)
    direct = vhd.convert(src, tmp_path / "direct.vhd", seed=SEED, epoch=EPOCH)
    viaqemu = vhd.convert(src, tmp_path / "qemu.vhd", seed=SEED, epoch=EPOCH, method="qemu-img")
    virtual = -(-src.stat().st_size // MiB) * MiB
    for art in (direct, viaqemu):
        assert art.path.stat().st_size == virtual + 512
        assert vhd.validate(art.path) == []
        i = info(art.path, "vpc")
        assert i["format"] == "vpc" and i["virtual-size"] == virtual
    assert direct.path.read_bytes() == viaqemu.path.read_bytes()
    ft = vhd.parse_footer(direct.path.read_bytes()[-512:])
    assert ft.timestamp == EPOCH - vhd.VHD_EPOCH and ft.uuid == common.seed_uuid(SEED, "vhd")
    assert ft.disk_type == 2 and ft.creator_app == b"qem2"
    # the disk inside reads back as the raw (padded with zeros), with a valid GPT at its end
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(direct.path), str(back)], check=True)
    assert back.stat().st_size == virtual
    with open(src, "rb") as a, open(back, "rb") as b:
        assert a.read(5 * MiB)[MiB:] == b.read(5 * MiB)[MiB:]  # data; MBR/GPT may be moved
    assert "No problems found" in subprocess.run(["sgdisk", "-v", str(back)], capture_output=True,
                                                 text=True).stdout
    assert read_gpt(back).partition(2).last_lba == src.stat().st_size // 512 - 35


def test_vhd_validator_rejects_what_azure_rejects(raw, tmp_path):
    good = vhd.convert(raw, tmp_path / "good.vhd", seed=SEED, epoch=EPOCH).path
    data = bytearray(good.read_bytes())

    def problems(b: bytes, name: str) -> list[str]:
        p = tmp_path / name
        p.write_bytes(b)
        return [f"{x.field}: {x.message}" for x in vhd.validate(p) if x.severity == "error"]

    bad = bytearray(data)
    bad[-512 + 64] ^= 0xFF
    assert any(m.startswith("footer.checksum") for m in problems(bad, "csum.vhd"))
    assert any(m.startswith("footer.cookie") for m in problems(bytes(data[:-512]), "nofooter.vhd"))
    assert any("whole number of MiB plus 512" in m for m in problems(bytes(data[:-512 - 4096]) + data[-512:], "short.vhd"))
    dyn = tmp_path / "dyn.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
                    str(raw), str(dyn)], check=True)
    assert any(x.field == "footer.disk_type" for x in vhd.validate(dyn))
    with pytest.raises(BadImageError, match="not an Azure-ready VHD"):
        vhd.ensure_valid(dyn)


def test_vhd_size_limit_checked_before_any_work(tmp_path):
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(2041 * GiB)
    with pytest.raises(InvalidConfigError, match="exceeds the format's limit of 2040 GiB"):
        vhd.convert(big, tmp_path / "big.vhd", seed=SEED, epoch=EPOCH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.raw"]


# --------------------------------------------------------------------------- vhdx

def test_vhdx_dynamic_and_patched(raw, tmp_path):
    out = tmp_path / "d.vhdx"
    vhdx.convert(raw, out, seed=SEED)
    i = info(out)
    assert i["format"] == "vhdx" and i["virtual-size"] == raw.stat().st_size
    qemu_check(out, "vhdx")
    assert same_content(raw, out, "vhdx")
    with open(out, "rb") as f:
        headers = vhdx.read_headers(f)  # checksums verified while reading
    assert {h["file_write"] for h in headers} == {common.seed_uuid(SEED, "vhdx-file-write")}
    assert all(h["log_guid"].int == 0 for h in headers)


def test_crc32c_known_vector():
    assert vhdx.crc32c(b"123456789") == 0xE3069283


# --------------------------------------------------------------------------- gce

def _tar_headers(tgz: Path) -> bytes:
    with gzip.open(tgz) as g:
        return g.read(512)


@pytest.mark.parametrize("which", ["raw", "odd_raw"])
def test_gce_tarball(which, request, tmp_path):
    src: Path = request.getfixturevalue(which)
    out = tmp_path / gce.file_name("tiny")
    art = gce.convert(src, out, epoch=EPOCH)
    assert out.name == "tiny-gcp.tar.gz" and art.virtual_size == GiB
    raw_gz = out.read_bytes()
    assert raw_gz[:4] == b"\x1f\x8b\x08\x00" and raw_gz[4:8] == b"\0\0\0\0"  # no name, no mtime
    listing = subprocess.run(["tar", "--list", "-v", "--numeric-owner", "-f", str(out)], check=True,
                             capture_output=True, text=True).stdout.splitlines()
    assert len(listing) == 1
    fields = listing[0].split()
    assert fields[0] == "-rw-r--r--" and fields[1] == "0/0" and fields[2] == str(GiB)
    assert fields[-1] == "disk.raw"
    head = _tar_headers(out)
    assert head[156:157] == b"S" and head[257:265] == b"ustar  \0"  # oldgnu sparse member
    with tarfile.open(out) as t:
        (m,) = t.getmembers()
        assert m.name == "disk.raw" and m.size == GiB and m.mtime == EPOCH and m.uid == m.gid == 0
    # GNU tar extracts the same bytes (padded to 1 GiB, backup GPT moved to the end)
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(x)], check=True)
    disk = x / "disk.raw"
    assert disk.stat().st_size == GiB and disk.stat().st_blocks * 512 < 32 * MiB  # extracted sparse
    with open(src, "rb") as a, open(disk, "rb") as b:
        assert a.read(5 * MiB)[MiB:] == b.read(5 * MiB)[MiB:]
    assert "No problems found" in subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True,
                                                 text=True).stdout


def test_gce_refuses_disk_raw_as_name(raw, tmp_path):
    with pytest.raises(UserInputError):
        gce.convert(raw, tmp_path / "disk.raw", epoch=EPOCH)


# --------------------------------------------------------------------------- ova

def test_ova_members_manifest_and_ovf(raw, tmp_path):
    out = tmp_path / "tiny.ova"
    ova.convert(raw, out, seed=SEED, epoch=EPOCH, settings=ova.OvfSettings("tiny", hw_version=17))
    assert ova.check(out) == []
    with tarfile.open(out) as t:
        members = t.getmembers()
        assert [m.name for m in members] == ["tiny.ovf", "tiny.mf", "disk.vmdk"]
        assert all(m.mtime == EPOCH and m.uid == 0 and m.mode == 0o644 for m in members)
        vm = tmp_path / "disk.vmdk"
        vm.write_bytes(t.extractfile("disk.vmdk").read())
        mf = t.extractfile("tiny.mf").read().decode()
    assert info(vm)["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert same_content(raw, vm, "vmdk")
    assert f"SHA256(disk.vmdk)= {common.sha256_file(vm)}\n" in mf
    listing = subprocess.run(["tar", "--list", "-f", str(out)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert listing == ["tiny.ovf", "tiny.mf", "disk.vmdk"]


def _rewrite_ova(src: Path, dest: Path, change) -> Path:
    with tarfile.open(src) as t:
        items = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    items = change(items)
    import io

    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as t:
        for m, data in items:
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return dest


def test_ova_check_finds_problems(raw, tmp_path):
    good = ova.convert(raw, tmp_path / "g.ova", seed=SEED, epoch=EPOCH, settings=ova.OvfSettings("g")).path
    swapped = _rewrite_ova(good, tmp_path / "swapped.ova", lambda it: [it[2], it[0], it[1]])
    assert any("first member" in p for p in ova.check(swapped))
    tampered = _rewrite_ova(good, tmp_path / "tampered.ova",
                            lambda it: [it[0], it[1], (it[2][0], it[2][1][:-1] + b"\x01")])
    assert any("manifest digest of disk.vmdk" in p for p in ova.check(tampered))

    def no_disk_item(it):
        ovf = it[0][1].replace(b"<rasd:ResourceType>17</rasd:ResourceType>",
                               b"<rasd:ResourceType>1</rasd:ResourceType>")
        ovf = ovf.replace(b'ovf:capacity="', b'ovf:capacity="1')
        return [(it[0][0], ovf), it[2]]

    broken = _rewrite_ova(good, tmp_path / "broken.ova", no_disk_item)
    probs = ova.check(broken)
    assert any("not attached" in p for p in probs)
    assert any("capacity" in p for p in probs)


# --------------------------------------------------------------------------- compress

@pytest.mark.parametrize("method", ["gzip", "xz", "zstd"])
def test_compress_records_uncompressed_sha256(raw, tmp_path, method):
    art = qcow2.convert(raw, tmp_path / "d.qcow2")
    plain_sha = common.sha256_file(art.path)
    out = compress.compress(art, method)
    assert not (tmp_path / "d.qcow2").exists() and out.path.name == "d.qcow2" + compress.SUFFIX[method]
    assert out.uncompressed_sha256 == plain_sha and out.record()["compression"] == method
    back = tmp_path / "back.qcow2"
    tool = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"]}[method]
    with open(back, "wb") as f:
        subprocess.run([*tool, str(out.path)], stdout=f, check=True)
    assert common.sha256_file(back) == plain_sha


@pytest.mark.parametrize("fmt", ["vmdk", "gce", "ova", "vhdx"])
def test_compress_refused_for_formats_with_their_own(fmt):
    with pytest.raises(InvalidConfigError):
        compress.check(fmt, "xz")
    compress.check(fmt, "none")


# --------------------------------------------------------------------------- determinism

def test_every_format_is_deterministic(raw, tmp_path):
    for fmt in formats.FORMATS:
        digests = set()
        for run in ("a", "b"):
            d = tmp_path / run
            d.mkdir(exist_ok=True)
            art = formats.convert(fmt, raw, d / formats.file_name("det", fmt), seed=SEED, epoch=EPOCH,
                                  name="det")
            digests.add(common.sha256_file(art.path))
        assert len(digests) == 1, fmt
    # a different seed changes the formats that carry identifiers
    for fmt in ("vmdk", "vhd", "vhdx", "ova"):
        d = tmp_path / "c"
        d.mkdir(exist_ok=True)
        art = formats.convert(fmt, raw, d / formats.file_name("det", fmt), seed="other", epoch=EPOCH, name="det")
        assert common.sha256_file(art.path) != common.sha256_file(tmp_path / "a" / art.path.name), fmt


# --------------------------------------------------------------------------- bad input

def test_bad_inputs(raw, tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        formats.convert("qcow2", tmp_path / "nope.raw", tmp_path / "x.qcow2", seed=SEED, epoch=EPOCH)
    q = qcow2.convert(raw, tmp_path / "in.qcow2").path
    with pytest.raises(BadImageError, match="not a raw disk image"):
        formats.convert("vhd", q, tmp_path / "x.vhd", seed=SEED, epoch=EPOCH)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"x" * 1000)
    with pytest.raises(BadImageError, match="multiple of 512"):
        formats.convert("vhdx", odd, tmp_path / "x.vhdx", seed=SEED, epoch=EPOCH)
    with pytest.raises(InvalidConfigError, match="unknown format 'vdi'"):
        formats.convert("vdi", raw, tmp_path / "x.vdi", seed=SEED, epoch=EPOCH)
    existing = tmp_path / "exists.qcow2"
    existing.write_bytes(b"keep")
    with pytest.raises(UserInputError, match="file exists"):
        formats.convert("qcow2", raw, existing, seed=SEED, epoch=EPOCH)
    assert existing.read_bytes() == b"keep"
    formats.convert("qcow2", raw, existing, seed=SEED, epoch=EPOCH, force=True)
    assert info(existing)["format"] == "qcow2"
    assert leftovers(tmp_path) == []


def test_tool_failure_and_missing_tool_leave_nothing(raw, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-img").write_text("#!/bin/sh\necho 'qemu-img: simulated failure' >&2\nexit 1\n")
    (fake / "qemu-img").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    for fmt in ("qcow2", "vmdk", "vhdx", "ova"):
        with pytest.raises(ToolError, match="simulated failure"):
            formats.convert(fmt, raw, out / f"x.{fmt}", seed=SEED, epoch=EPOCH)
    assert list(out.iterdir()) == []
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissingError) as ei:
        formats.convert("qcow2", raw, out / "x.qcow2", seed=SEED, epoch=EPOCH)
    assert ei.value.exit_code == 5 and "qemu-utils" in ei.value.hint
    assert list(out.iterdir()) == []


def test_artifact_record(raw, tmp_path):
    art = formats.convert("vhd", raw, tmp_path / "r.vhd", seed=SEED, epoch=EPOCH)
    rec = art.record()
    assert rec["format"] == "vhd" and rec["size"] == 64 * MiB + 512 and rec["virtual_size"] == 64 * MiB
    assert rec["sha256"] == common.sha256_file(art.path)
    import hashlib
    assert rec["sha256"] == hashlib.sha256(art.path.read_bytes()).hexdigest()
    assert struct.unpack(">Q", art.path.read_bytes()[-512 + 48:-512 + 56])[0] == 64 * MiB
