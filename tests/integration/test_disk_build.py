"""disk.image end to end on synthetic sysroots, checked with the real tools:
sgdisk -v, pyparted, fsck.ext4 -fn, fsck.vfat -n, xfs_repair -n, mtools, debugfs, blkid;
byte-reproducibility; the grub.config and disk.image stage executables."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagebuilder.boot.grub import write_grub_config
from imagebuilder.disk.assemble import DiskOptions, build_disk
from imagebuilder.disk.gpt import read_gpt
from imagebuilder.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / "osbuild-stages"
EPOCH = 1700000000
BLS = """title Synthetic OS 1 (ostree:0)
version 1
options console=ttyS0,115200n8 root=LABEL=root rw $ignition_firstboot ostree=/ostree/boot.1/syn/abc/0
linux /ostree/syn-abc/vmlinuz
initrd /ostree/syn-abc/initramfs.img
"""


def make_sysroot(base: Path, *, spaces: bool = True) -> Path:
    """A tree shaped like ostree.deploy's output (boot/, root/, efi/) with odd file kinds."""
    sr = base / "sysroot"
    ent = sr / "boot" / "loader.1" / "entries"
    ent.mkdir(parents=True)
    os.symlink("loader.1", sr / "boot" / "loader")
    os.symlink(".", sr / "boot" / "boot")
    (ent / "ostree-1.conf").write_text(BLS)
    k = sr / "boot" / "ostree" / "syn-abc"
    k.mkdir(parents=True)
    (k / "vmlinuz").write_bytes(os.urandom(1 << 20))
    (k / "initramfs.img").write_bytes(b"\0" * 4096 + b"x")
    root = sr / "root"
    for d in ("ostree/repo/objects/ab", "ostree/deploy/syn/deploy/abc.0/usr/bin", "boot", "sysroot", "var"):
        (root / d).mkdir(parents=True)
    obj = root / "ostree/repo/objects/ab/cdef.file"
    obj.write_bytes(b"#!/bin/sh\necho hi\n")
    obj.chmod(0o755)
    os.link(obj, root / "ostree/deploy/syn/deploy/abc.0/usr/bin/hi")  # ostree hard links
    os.symlink("sysroot/ostree", root / "ostree-link")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    with open(root / "sparse.bin", "wb") as f:
        f.truncate(64 << 20)
    os.chmod(root / "var", 0o1777)
    if spaces:
        (root / "name with spaces \"q\"").write_text("x")
    efi = sr / "efi" / "EFI" / "vendor"
    efi.mkdir(parents=True)
    (efi / "readme.txt").write_text("vendor file\n")
    write_grub_config(sr / "boot", firstboot=True)
    return sr


def extract(disk: Path, offset: int, size: int, out: Path) -> Path:
    subprocess.run(["dd", f"if={disk}", f"of={out}", "bs=1M", f"skip={offset}", f"count={size}",
                    "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"], check=True)
    return out


def sha256(p: Path) -> str:
    """Digest of the file's size, data extents (offset + bytes); holes are not read.

    Stricter than a plain sha256 (the hole layout must match too) and much faster on
    sparse multi-GiB images."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            h.update(data.to_bytes(8, "little"))
            f.seek(data)
            left = hole - data
            while left:
                chunk = f.read(min(left, 1 << 20))
                h.update(chunk)
                left -= len(chunk)
            pos = hole
    return h.hexdigest()


def blkid(p: Path) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", str(p)], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def built512(tmp_path_factory):
    base = tmp_path_factory.mktemp("d512")
    sr = make_sysroot(base)
    out = base / "disk.raw"
    t = time.monotonic()
    rec = build_disk(sr, out, DiskOptions(size="1G", seed="itest"), base / "work", epoch=EPOCH)
    rec["_seconds"] = time.monotonic() - t
    return sr, out, rec


def test_gpt_valid_for_sgdisk_and_pyparted(built512):
    _, disk, rec = built512
    v = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert "No problems found" in v.stdout, v.stdout
    t = read_gpt(disk)
    assert [p.name for p in t.partitions] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
    assert str(t.disk_guid) == rec["disk_guid"]
    parted = pytest.importorskip("parted")
    pd = parted.newDisk(parted.getDevice(str(disk)))
    assert [(p.number, p.geometry.start, p.geometry.end) for p in pd.partitions] == [
        (p["number"], p["start_lba"], p["last_lba"]) for p in rec["partitions"]]


def test_image_is_sparse_and_fast(built512):
    _, disk, rec = built512
    st = disk.stat()
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 < 64 << 20, "disk image should stay sparse"
    assert rec["_seconds"] < 60


def test_filesystems_check_clean(built512, tmp_path):
    _, disk, rec = built512
    parts = {p["name"]: p for p in rec["partitions"]}
    for name in ("boot", "root"):
        img = extract(disk, parts[name]["offset"], parts[name]["size"], tmp_path / f"{name}.img")
        r = subprocess.run(["fsck.ext4", "-fn", str(img)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        b = blkid(img)
        assert b["TYPE"] == "ext4" and b["LABEL"] == name
        assert b["UUID"] == parts[name]["filesystem"]["uuid"]
    esp = extract(disk, parts["EFI-SYSTEM"]["offset"], parts["EFI-SYSTEM"]["size"], tmp_path / "esp.img")
    r = subprocess.run(["fsck.vfat", "-n", str(esp)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    b = blkid(esp)
    assert b["TYPE"] == "vfat" and b["LABEL"] == "EFI-SYSTEM"
    assert b["UUID"] == parts["EFI-SYSTEM"]["filesystem"]["uuid"]


def test_contents(built512, tmp_path):
    sr, disk, rec = built512
    parts = {p["name"]: p for p in rec["partitions"]}
    esp = extract(disk, parts["EFI-SYSTEM"]["offset"], parts["EFI-SYSTEM"]["size"], tmp_path / "esp.img")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    efi = subprocess.run(["mtype", "-i", str(esp), "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True,
                         env=env, check=True).stdout
    assert efi[:2] == b"MZ" and len(efi) > 100_000
    assert subprocess.run(["mtype", "-i", str(esp), "::/EFI/vendor/readme.txt"], capture_output=True,
                          env=env, check=True).stdout == b"vendor file\n"
    boot = extract(disk, parts["boot"]["offset"], parts["boot"]["size"], tmp_path / "boot.img")

    def dbg(img: Path, cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(img)], capture_output=True, text=True).stdout

    assert dbg(boot, "cat /grub/grub.cfg") == (sr / "boot/grub/grub.cfg").read_text()
    assert dbg(boot, "cat /loader.1/entries/ostree-1.conf") == BLS
    assert "loader.1" in dbg(boot, "stat /loader")  # fast symlink target
    assert dbg(boot, "cat /ignition.firstboot") == ""
    assert "ignition.firstboot" in dbg(boot, "ls /")
    root = extract(disk, parts["root"]["offset"], parts["root"]["size"], tmp_path / "root.img")
    st = dbg(root, "stat /ostree/deploy/syn/deploy/abc.0/usr/bin/hi")
    assert "Links: 2" in st  # hard links survive
    assert dbg(root, "cat /ostree/deploy/syn/deploy/abc.0/usr/bin/hi") == "#!/bin/sh\necho hi\n"
    assert "Mode:  01777" in dbg(root, "stat /var")
    assert "ctime: 0x6553f100" in st and "atime: 0x6553f100" in st
    # a sparse source file stays sparse inside the filesystem
    assert "Blockcount: 0" in dbg(root, "stat /sparse.bin")


def test_bios_boot_code(built512):
    _, disk, rec = built512
    raw = open(disk, "rb").read(3 << 20)
    bootimg = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    assert raw[:3] == bootimg[:3] and raw[0x5a:0x5c] == bootimg[0x5a:0x5c]
    assert struct.unpack_from("<Q", raw, 0x5c)[0] == 2048  # kernel sector = BIOS-BOOT start
    assert raw[0x66:0x68] == b"\x90\x90"
    assert raw[510:512] == b"\x55\xaa" and raw[446 + 4] == 0xEE  # protective MBR kept
    core = 2048 * 512
    start, nsec, seg = struct.unpack_from("<QHH", raw, core + 0x1F4)
    assert start == 2049 and seg == 0x820
    assert nsec == rec["bootloader"]["bios_core"]["core_sectors"] - 1
    assert rec["bootloader"]["bios"] and rec["bootloader"]["uefi"]


def test_reproducible_and_seeded(tmp_path):
    sr = make_sysroot(tmp_path)
    a, b, c = tmp_path / "a.raw", tmp_path / "b.raw", tmp_path / "c.raw"
    build_disk(sr, a, DiskOptions(size="700M", seed="r"), tmp_path / "w1", epoch=EPOCH)
    # disturb what mke2fs -d copies: atimes (reading) and ctimes (chmod to the same mode)
    time.sleep(1.1)
    for dirpath, _dirs, files in os.walk(sr):  # (does not follow boot/boot -> .)
        for n in files:
            p = Path(dirpath) / n
            if not p.is_symlink():
                p.read_bytes()
                p.chmod(p.stat().st_mode & 0o7777)
    build_disk(sr, b, DiskOptions(size="700M", seed="r"), tmp_path / "w2", epoch=EPOCH)
    assert sha256(a) == sha256(b)
    build_disk(sr, c, DiskOptions(size="700M", seed="other"), tmp_path / "w3", epoch=EPOCH)
    assert sha256(a) != sha256(c)
    ta, tc = read_gpt(a), read_gpt(c)
    assert ta.disk_guid != tc.disk_guid


@pytest.mark.root
def test_4096_sectors(tmp_path):
    sr = make_sysroot(tmp_path)
    disk = tmp_path / "disk4k.raw"
    rec = build_disk(sr, disk, DiskOptions(size="1G", sector_size=4096, seed="4k"), tmp_path / "w",
                     epoch=EPOCH)
    assert rec["bootloader"]["bios"] is False and rec["bootloader"]["uefi"]
    assert rec["sector_size"] == 4096
    t = read_gpt(disk)
    assert t.sector_size == 4096 and t.first_usable_lba == 6
    assert t.partition("BIOS-BOOT").first_lba == 256
    loop = subprocess.run(["losetup", "-f", "--show", "-b", "4096", "-r", str(disk)],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        v = subprocess.run(["sgdisk", "-v", loop], capture_output=True, text=True)
        assert "No problems found" in v.stdout, v.stdout
        p = subprocess.run(["sgdisk", "-p", loop], capture_output=True, text=True).stdout
        assert "Sector size (logical/physical): 4096" in p
        parted = pytest.importorskip("parted")
        dev = parted.getDevice(loop)
        assert dev.sectorSize == 4096
        pd = parted.newDisk(dev)
        assert [q.name for q in pd.partitions] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
        assert [q.geometry.start for q in pd.partitions] == [q.first_lba for q in t.partitions]
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    parts = {p["name"]: p for p in rec["partitions"]}
    esp = extract(disk, parts["EFI-SYSTEM"]["offset"], parts["EFI-SYSTEM"]["size"], tmp_path / "esp.img")
    assert struct.unpack_from("<H", esp.read_bytes()[:512], 11)[0] == 4096  # FAT bytes/sector
    assert subprocess.run(["fsck.vfat", "-n", str(esp)], capture_output=True).returncode == 0
    boot = extract(disk, parts["boot"]["offset"], parts["boot"]["size"], tmp_path / "boot.img")
    assert subprocess.run(["fsck.ext4", "-fn", str(boot)], capture_output=True).returncode == 0


def test_bios_refused_on_4096(tmp_path):
    sr = make_sysroot(tmp_path)
    with pytest.raises(UserInputError, match="4096"):
        build_disk(sr, tmp_path / "x.raw", DiskOptions(size="1G", sector_size=4096, bios=True),
                   tmp_path / "w")
    with pytest.raises(UserInputError, match="neither"):
        build_disk(sr, tmp_path / "x.raw", DiskOptions(size="1G", bios=False, uefi=False), tmp_path / "w")
    assert not (tmp_path / "x.raw").exists()


def test_missing_grub_cfg(tmp_path):
    sr = make_sysroot(tmp_path)
    (sr / "boot/grub/grub.cfg").unlink()
    with pytest.raises(UserInputError, match="grub.cfg missing") as ei:
        build_disk(sr, tmp_path / "x.raw", DiskOptions(size="1G"), tmp_path / "w")
    assert "org.imagebuilder.grub.config" in (ei.value.hint or "")


def _xfs_field(img: Path, path: str, field: str) -> str:
    out = subprocess.run(["xfs_db", "-r", "-c", f"path {path}", "-c", f"print {field}", str(img)],
                         capture_output=True, text=True).stdout
    return out.split("=", 1)[1].strip()


@pytest.mark.skipif(shutil.which("mkfs.xfs") is None, reason="needs xfsprogs")
@pytest.mark.parametrize("method", [pytest.param("mount", marks=pytest.mark.root), "protofile"])
def test_xfs_root(tmp_path, method):
    sr = make_sysroot(tmp_path, spaces=method == "mount")
    disk = tmp_path / "xfs.raw"
    rec = build_disk(sr, disk, DiskOptions(size="1G", root_fs="xfs", seed="x", xfs_method=method),
                     tmp_path / "w", epoch=EPOCH)
    assert rec["reproducible"] is False and rec["root_populate"] == method
    parts = {p["name"]: p for p in rec["partitions"]}
    root = extract(disk, parts["root"]["offset"], parts["root"]["size"], tmp_path / "root.img")
    r = subprocess.run(["xfs_repair", "-n", "-f", str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = blkid(root)
    assert b["TYPE"] == "xfs" and b["LABEL"] == "root" and b["UUID"] == parts["root"]["filesystem"]["uuid"]
    hi = "/ostree/deploy/syn/deploy/abc.0/usr/bin/hi"
    assert _xfs_field(root, hi, "core.mode") == "0100755"
    # mount + cp -a keeps the ostree hard links and the sticky bit; a protofile cannot
    assert _xfs_field(root, hi, "core.nlinkv2") == ("2" if method == "mount" else "1")
    assert _xfs_field(root, "/var", "core.mode") == ("041777" if method == "mount" else "040777")


def test_xfs_refuses_names_with_spaces(tmp_path):
    sr = make_sysroot(tmp_path, spaces=True)
    with pytest.raises(UserInputError, match="spaces"):
        build_disk(sr, tmp_path / "x.raw", DiskOptions(size="1G", root_fs="xfs", xfs_method="protofile"),
                   tmp_path / "w")


# ------------------------------------------------------------------ stage executables

def _run_stage(name: str, tree: Path, options: dict, inputs: dict, workdir: Path) -> subprocess.CompletedProcess:
    args = {"tree": str(tree), "options": options, "inputs": {k: str(v) for k, v in inputs.items()},
            "workdir": str(workdir), "meta": {"id": "test", "source_epoch": EPOCH}}
    af = workdir.parent / f"{name}.args.json"
    af.write_text(json.dumps(args))
    workdir.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(STAGES / name), str(af)], capture_output=True, text=True)


def _schema(name: str) -> dict:
    meta = json.loads((STAGES / f"{name}.meta.json").read_text())
    assert set(meta) == {"summary", "description", "schema"}
    assert meta["schema"]["additionalProperties"] is False
    return meta["schema"]


def test_stage_schemas_accept_engine_options_and_reject_unknown():
    jsonschema = pytest.importorskip("jsonschema")
    g = _schema("org.imagebuilder.grub.config")
    d = _schema("org.imagebuilder.disk.image")
    jsonschema.validate({"firstboot": True, "console": ["tty0", "ttyS0,115200n8"]}, g)
    jsonschema.validate({"timeout": 3, "serial": {"unit": 1, "speed": 9600}, "terminals": ["serial"]}, g)
    jsonschema.validate({"size": "4G", "sector_size": 4096, "root_fs": "xfs", "seed": "s"}, d)
    jsonschema.validate({"size": 8 << 30, "partitions": {"boot": 512}, "bios": False, "uefi": True,
                         "xfs_populate": "protofile"}, d)
    for bad, schema in [({"firstbot": True}, g), ({"sector_size": 1024}, d), ({"size": "4X"}, d),
                        ({"root_fs": "btrfs"}, d), ({"partitions": {"swap": 1}}, d)]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_stages_build_a_disk(tmp_path):
    sr = make_sysroot(tmp_path)
    (sr / "boot/grub/grub.cfg").unlink()
    (sr / "boot/ignition.firstboot").unlink()
    r = _run_stage("org.imagebuilder.grub.config", sr, {"firstboot": True, "console": ["tty0", "ttyS0,115200n8"]},
                   {}, tmp_path / "w1")
    assert r.returncode == 0, r.stderr
    cfg = (sr / "boot/grub/grub.cfg").read_text()
    assert "serial --unit=0 --speed=115200" in cfg and (sr / "boot/ignition.firstboot").exists()
    grec = json.loads((sr / ".imagebuilder/grub.json").read_text())
    assert grec["firstboot"] is True and grec["entries"][0]["id"] == "ostree-1"
    shutil.rmtree(sr / ".imagebuilder")
    tree = tmp_path / "image"
    tree.mkdir()
    r = _run_stage("org.imagebuilder.disk.image", tree, {"size": "1G", "seed": "stage"},
                   {"sysroot": sr}, tmp_path / "w2")
    assert r.returncode == 0, r.stderr
    assert (tree / "disk.raw").stat().st_size == 1 << 30
    rec = json.loads((tree / ".imagebuilder/disk.json").read_text())
    assert rec["filename"] == "disk.raw" and rec["bootloader"]["bios"] is True
    assert [p["name"] for p in rec["partitions"]] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
    assert sorted(os.listdir(tree)) == [".imagebuilder", "disk.raw"]
    # a stage failure is one line + status 1
    r = _run_stage("org.imagebuilder.disk.image", tmp_path / "image", {"size": "1G"},
                   {"sysroot": tmp_path / "nope"}, tmp_path / "w3")
    assert r.returncode == 1 and "stage failed" in r.stderr and "no boot/" in r.stderr


def test_tree_too_big_for_partition(tmp_path):
    sr = make_sysroot(tmp_path)
    with open(sr / "root" / "huge.bin", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 80 << 20)  # allocated, not written
    # 600 MiB disk: 513 MiB of fixed partitions leave 86 MiB for root
    with pytest.raises(UserInputError, match="root partition: the tree needs about"):
        build_disk(sr, tmp_path / "x.raw", DiskOptions(size="600M"), tmp_path / "w")
    assert not (tmp_path / "x.raw").exists()


def test_record_is_a_function_of_the_inputs(tmp_path):
    sr = make_sysroot(tmp_path)
    timings: dict[str, float] = {}
    r1 = build_disk(sr, tmp_path / "a.raw", DiskOptions(size="700M", seed="rec"), tmp_path / "w1",
                    epoch=EPOCH, timings=timings)
    r2 = build_disk(sr, tmp_path / "b.raw", DiskOptions(size="700M", seed="rec"), tmp_path / "w2",
                    epoch=EPOCH)
    assert {**r1, "filename": None} == {**r2, "filename": None}
    assert set(timings) >= {"esp", "boot", "root", "assemble", "grub-bios"}
    json.dumps(r1)


def test_sparse_copy_keeps_holes_and_falls_back(tmp_path, monkeypatch):
    from imagebuilder.disk import assemble

    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(b"A" * 4096)
        f.seek(6 << 20)
        f.write(b"B" * 10000)
    for broken in (False, True):
        if broken:
            def refuse(*_a, **_k):
                raise OSError(18, "Invalid cross-device link")  # EXDEV
            monkeypatch.setattr(assemble.os, "copy_file_range", refuse)
        dst = tmp_path / f"dst{broken}.img"
        with open(dst, "wb") as f:
            f.truncate(16 << 20)
            n = assemble.sparse_copy_into(src, f.fileno(), 2 << 20, 8 << 20)
        assert n >= 4096 + 10000
        raw = dst.read_bytes()
        assert raw[(3 << 20):(3 << 20) + 4096] == b"A" * 4096
        assert raw[(8 << 20):(8 << 20) + 10000] == b"B" * 10000
        assert raw.count(b"A") == 4096 and raw.count(b"B") == 10000
        assert dst.stat().st_blocks * 512 < 2 << 20  # holes stayed holes
    with pytest.raises(UserInputError, match="do not fit"):
        with open(tmp_path / "small.img", "wb") as f:
            assemble.sparse_copy_into(src, f.fileno(), 0, 1 << 20)
