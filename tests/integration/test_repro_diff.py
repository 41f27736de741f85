"""`imagebuilder diff` on small real filesystems and ISOs made here (mkfs.ext4 -d, mkfs.vfat +
mtools, xorriso), and the FAT reader against mtools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.repro.diff import diff_json, diff_paths
from imagebuilder.repro.fat import FatFs

EPOCH = 1700000000


def tool(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None and not Path(f"/usr/sbin/{n}").exists()
               and not Path(f"/sbin/{n}").exists()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def tree(base: Path) -> Path:
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "hostname").write_text("tiny\n")
    (base / "etc" / "motd").write_text("hello\n")
    (base / "bin").mkdir()
    os.symlink("../etc/hostname", base / "bin" / "link")
    for p in [*base.rglob("*"), base]:
        os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)
    return base


def mkext4(src: Path, img: Path) -> Path:
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-U", "6d1b7bde-0bb5-4c9a-9a9c-5ee0ad8cc2a1",
                    "-E", "hash_seed=6d1b7bde-0bb5-4c9a-9a9c-5ee0ad8cc2a1", "-d", str(src), str(img)],
                   check=True, env=env)
    return img


def test_ext4_images_diff_names_file_and_field(tmp_path):
    tool("mkfs.ext4", "debugfs", "dumpe2fs")
    a = mkext4(tree(tmp_path / "a"), tmp_path / "a.img")
    b_src = tree(tmp_path / "b")
    (b_src / "etc" / "motd").write_text("changed\n")  # same size is not required
    os.utime(b_src / "etc" / "motd", (EPOCH, EPOCH + 3600))
    (b_src / "etc" / "new").write_text("x")
    os.chmod(b_src / "etc" / "hostname", 0o600)
    for p in (b_src / "etc", b_src / "etc" / "new", b_src / "etc" / "hostname"):
        os.utime(p, (EPOCH, EPOCH))
    b = mkext4(b_src, tmp_path / "b.img")
    rep = diff_paths(a, b)
    assert not rep.identical
    got = {(d.where.rsplit(": ", 1)[-1], d.field) for d in rep.differences}
    assert ("/etc/motd", "sha256") in got and ("/etc/motd", "mtime") in got
    assert ("/etc/motd", "size") in got
    assert ("/etc/hostname", "mode") in got
    assert ("/etc/new", "added") in got
    motd = next(d for d in rep.differences if d.where.endswith("/etc/motd") and d.field == "mtime")
    assert (motd.a, motd.b) == ("2023-11-14T22:13:20Z", "2023-11-14T23:13:20Z")
    # the same tree made again: mke2fs -d copies the source inodes' ctime (which no tool can
    # set), so at most ctime differs -- and the diff says exactly that
    again = diff_paths(a, mkext4(tree(tmp_path / "c"), tmp_path / "c.img"))
    assert {d.field for d in again.differences} <= {"ctime"}, again.render()


def test_cli_identical_and_different(tmp_path, cli):
    tool("mkfs.ext4", "debugfs", "dumpe2fs")
    a = mkext4(tree(tmp_path / "a"), tmp_path / "a.img")
    shutil.copy(a, tmp_path / "same.img")
    r = cli("diff", str(a), str(tmp_path / "same.img"))
    assert r.returncode == 0 and r.stdout == b"identical\n"
    b = tmp_path / "b.img"
    shutil.copy(a, b)
    subprocess.run(["debugfs", "-w", "-R", "sif /etc/motd mtime 201001010000", str(b)],
                   check=True, capture_output=True)
    r = cli("diff", str(a), str(b))
    out = r.stdout.decode()
    assert r.returncode == 1, r.stderr
    assert "/etc/motd: mtime: 2023-11-14T22:13:20Z -> 2010-01-01T00:00:00Z" in out
    assert out.splitlines()[-1].startswith("different: 1 difference")
    r = cli("diff", str(a), str(b), "--json")
    rep = json.loads(r.stdout)
    assert rep["identical"] is False and rep["differences"][0]["field"] == "mtime"
    r = cli("diff", str(a), str(tmp_path))
    assert r.returncode == 2 and b"without meta.json" in r.stderr


def mkvfat(img: Path, files: dict[str, bytes], tz: str = "UTC") -> Path:
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH), TZ=tz, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mkfs.vfat", "--invariant", "-i", "12345678", "-n", "ESP", str(img)],
                   check=True, capture_output=True, env=env)
    src = img.parent / f"{img.name}.src"
    for name, data in files.items():
        p = src / name.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for p in [*src.rglob("*")]:
        os.utime(p, (EPOCH, EPOCH))
    subprocess.run(["mcopy", "-s", "-m", "-i", str(img), *[str(x) for x in sorted(src.iterdir())],
                    "::/"], check=True, env=env)
    return img


def test_fat_reader_matches_mtools_and_diff_finds_timezone_times(tmp_path):
    tool("mkfs.vfat", "mcopy", "mdir")
    files = {"/EFI/BOOT/BOOTX64.EFI": os.urandom(5000), "/EFI/a-long-file-name.txt": b"x" * 3}
    a = mkvfat(tmp_path / "a.img", files)
    with open(a, "rb") as f:
        fs = FatFs(f)
        listing = fs.listing()
        assert fs.boot["volume_id"] == "12345678" and fs.boot["volume_label"] == "ESP"
    assert listing["/EFI/a-long-file-name.txt"]["size"] == 3
    assert listing["/EFI/BOOT/BOOTX64.EFI"]["mtime"] == "2023-11-14T22:13:20"
    out = subprocess.run(["mdir", "-/", "-b", "-i", str(a), "::/"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout
    mtools = {line.strip()[2:].rstrip("/") for line in out.splitlines() if line.strip()}
    ours = {p for p in listing if p.startswith("/EFI")}
    assert {p.lstrip("/") for p in ours} == {m.lstrip("/") for m in mtools}
    # the same files, copied under another TZ: FAT stores local time
    b = mkvfat(tmp_path / "b.img", files, tz="Asia/Tokyo")
    rep = diff_paths(a, b)
    fields = {(d.where.rsplit(": ", 1)[-1], d.field) for d in rep.differences}
    assert ("/EFI/BOOT/BOOTX64.EFI", "mtime") in fields, rep.render()
    # first cluster differences (layout) are named too, and content changes
    c = mkvfat(tmp_path / "c.img", {**files, "/EFI/BOOT/BOOTX64.EFI": b"other"})
    fields = {(d.where.rsplit(": ", 1)[-1], d.field) for d in diff_paths(a, c).differences}
    assert ("/EFI/BOOT/BOOTX64.EFI", "sha256") in fields


def test_iso_diff_names_record_dates_of_a_new_directory(tmp_path):
    """The `iso customize --add-file X:/newdir/file` case: xorriso stamps the new directory."""
    tool("xorriso")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hi\n")
    for p in [*src.rglob("*"), src]:
        os.utime(p, (EPOCH, EPOCH))
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))

    def mkiso(out: Path, extra: list[str]) -> Path:
        subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "TEST", "-o", str(out),
                        str(src), *extra], check=True, capture_output=True, env=env)
        return out

    a = mkiso(tmp_path / "a.iso", [])
    assert diff_paths(a, mkiso(tmp_path / "a2.iso", [])).identical
    new = tmp_path / "payload"
    new.write_text("p")
    os.utime(new, (EPOCH, EPOCH))
    b = mkiso(tmp_path / "b.iso", ["-graft-points", f"/newdir/file={new}"])
    rep = diff_paths(a, b)
    got = {(d.where.rsplit(": ", 1)[-1], d.field) for d in rep.differences}
    assert ("/newdir", "added") in got and ("/newdir/file", "added") in got
    assert any(d.field == "volume_space_size" for d in rep.differences)
    # a record whose date differs is named with the field
    os.utime(src / "d" / "f", (EPOCH, EPOCH + 60))
    c = mkiso(tmp_path / "c.iso", [])
    got = {(d.where.rsplit(": ", 1)[-1], d.field) for d in diff_paths(a, c).differences}
    assert ("/d/f", "date") in got and ("/d/f", "rr_mtime") in got


def test_qcow2_container_vs_contents(tmp_path):
    tool("qemu-img", "mkfs.ext4", "debugfs", "dumpe2fs")
    a = mkext4(tree(tmp_path / "a"), tmp_path / "a.img")
    q = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(a), str(q)], check=True)
    rep = diff_paths(a, q)
    assert [d.field for d in rep.differences] == ["format", "bytes"]
    assert "containers differ, the disk contents are identical" in rep.render()


def test_diff_json_paths():
    a = {"x": 1, "l": [1, 2], "d": {"k": "v"}}
    b = {"x": 2, "l": [1], "d": {"k": "v", "n": None}, "y": True}
    got = {(d.field, json.dumps(d.a), json.dumps(d.b)) for d in diff_json(a, b, "m")}
    assert got == {("x", "1", "2"), ("l[1]", "2", "null"), ("d.n", "null", "null"),
                   ("y", "null", "true")}
    assert not list(diff_json(a, json.loads(json.dumps(a)), "m"))
