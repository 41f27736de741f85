"""customize-image on small synthetic FCOS-layout images (GPT + ext4 boot/root, made with
mkfs.ext4 -d): kargs semantics, grub.cfg regeneration, -o vs in place, all-or-nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from imagebuilder.boot import grub
from imagebuilder.disk.gpt import LINUX_FS, ROOT_X86_64, Partition, Table, write_gpt
from imagebuilder.errors import BadImageError, InvalidConfigError, ToolError, UserInputError
from imagebuilder.image import customize as cz
from imagebuilder.image.customize import Customization, customize_image, load_customization
from imagebuilder.image.ext4 import Ext4Fs

pytestmark = pytest.mark.skipif(shutil.which("debugfs") is None or shutil.which("mkfs.ext4") is None,
                                reason="needs e2fsprogs")

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures/ignition/firstboot-demo.ign"
COMMIT = "ab" * 32
CSUM = "cd" * 32
OPTIONS = ("root=LABEL=root rw ignition.platform.id=metal console=tty0 console=ttyS0,115200n8 "
           f"$ignition_firstboot ostree=/ostree/boot.1/debian/{CSUM}/0")
MIB = 1 << 20


def _bls(options: str = OPTIONS) -> str:
    return (f"title Debian GNU/Linux 12 (bookworm) 12.0.1 (ostree:0)\nversion 1\n"
            f"options {options}\nlinux /ostree/debian-{CSUM}/vmlinuz-6.1.0-1-amd64\n"
            f"initrd /ostree/debian-{CSUM}/initramfs-6.1.0-1-amd64.img\n")


def make_boot_tree(d: Path, *, firstboot: bool = True, grub_cfg: bool = True) -> Path:
    ent = d / "loader.1/entries"
    ent.mkdir(parents=True)
    (ent / "ostree-1-debian.conf").write_text(_bls())
    (d / "loader").symlink_to("loader.1")
    (d / f"ostree/debian-{CSUM}").mkdir(parents=True)
    if grub_cfg:
        serial = grub.SerialConfig(unit=0, speed=115200)
        grub.write_grub_config(d, serial=serial, terminals=("serial", "console"), timeout=3,
                               firstboot=firstboot)
    elif firstboot:
        (d / "ignition.firstboot").write_text("")
    return d


def make_root_tree(d: Path) -> Path:
    dep = d / f"ostree/deploy/debian/deploy/{COMMIT}.0"
    (dep / "usr").mkdir(parents=True)
    (d / "ostree/deploy/debian/var").mkdir(parents=True)
    b = d / f"ostree/boot.1/debian/{CSUM}"
    b.mkdir(parents=True)
    (b / "0").symlink_to(f"../../../deploy/debian/deploy/{COMMIT}.0")
    objs = d / f"ostree/repo/objects/{COMMIT[:2]}"
    objs.mkdir(parents=True)
    try:
        from gi.repository import GLib

        meta = GLib.Variant("a{sv}", {"version": GLib.Variant("s", "12.0.1")})
        v = GLib.Variant.new_tuple(meta, GLib.Variant("ay", b""), GLib.Variant("a(say)", []),
                                   GLib.Variant("s", "subject"), GLib.Variant("s", ""),
                                   GLib.Variant("t", 0), GLib.Variant("ay", b"\0" * 32),
                                   GLib.Variant("ay", b"\0" * 32))
        (objs / f"{COMMIT[2:]}.commit").write_bytes(v.get_data_as_bytes().get_data())
    except ImportError:
        pass
    return d


def make_disk(tmp: Path, name: str = "disk.raw", *, size_mib: int = 64, **boot_kw) -> Path:
    """GPT: 1 BIOS-BOOT-ish gap, 3 = boot (ext4, 24 MiB), 4 = root (ext4, rest)."""
    img = tmp / name
    with open(img, "wb") as f:
        f.truncate(size_mib * MIB)
    boot_first, boot_last = 2048 * 2, 2048 * 2 + 24 * 2048 - 1
    root_first, root_last = boot_last + 1, size_mib * 2048 - 34
    table = Table(disk_guid=uuid.UUID(int=1), sector_size=512, total_sectors=size_mib * 2048,
                  partitions=(Partition(3, LINUX_FS, uuid.UUID(int=3), boot_first, boot_last, "boot"),
                              Partition(4, ROOT_X86_64, uuid.UUID(int=4), root_first, root_last, "root")))
    write_gpt(img, table)
    bt = make_boot_tree(tmp / f"{name}.boot", **boot_kw)
    rt = make_root_tree(tmp / f"{name}.root")
    for label, tree, first, last, fsuuid in (("boot", bt, boot_first, boot_last, "11111111-1111-4111-8111-111111111111"),
                                             ("root", rt, root_first, root_last, "22222222-2222-4222-8222-222222222222")):
        kib = (last - first + 1) // 2
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-U", fsuuid, "-d", str(tree),
                        "-E", f"offset={first * 512}", str(img), f"{kib}k"], check=True)
    return img


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def boot_fs(img: Path) -> Ext4Fs:
    from imagebuilder.image.disk import find_boot_partition

    return Ext4Fs(img, find_boot_partition(img).offset)


# --------------------------------------------------------------------------- pure edits


def test_edit_options_semantics():
    c = Customization(karg_append=("a=1", "rw"), karg_delete=("console", "quiet=1"), platform="qemu")
    got = cz.edit_options("root=x rw console=tty0 console=ttyS0 quiet quiet=1 ignition.platform.id=metal",
                          c, add_firstboot_literal=False)
    assert got == "root=x rw quiet ignition.platform.id=qemu a=1"


def test_edit_options_platform_appended_and_literal():
    c = Customization(platform="metal")
    assert cz.edit_options("root=x", c, add_firstboot_literal=True) == \
        "root=x ignition.platform.id=metal $ignition_firstboot"


def test_replace_options_keeps_other_lines():
    text = _bls()
    new = cz.replace_options(text, "a b")
    assert "options a b\n" in new and new.count("options") == 1 and "linux /ostree" in new


def test_grub_settings_roundtrip():
    cfg = grub.render_grub_cfg([], timeout=7, serial=grub.SerialConfig(unit=1, speed=9600),
                               terminals=("serial",), firstboot_network_kargs="rd.neednet=1 ip=dhcp")
    s = cz.grub_settings(cfg)
    assert s is not None and s.timeout == 7 and s.serial == grub.SerialConfig(unit=1, speed=9600)
    assert s.terminals == ("serial",) and s.network_kargs == "rd.neednet=1 ip=dhcp"
    assert cz.grub_settings("set default=0\nblscfg\n") is None


def test_customization_rejects_bad_input():
    with pytest.raises(UserInputError, match="nothing to change"):
        load_customization()
    with pytest.raises(UserInputError, match="one argument"):
        Customization(karg_append=("a b",))
    with pytest.raises(UserInputError, match="platform id"):
        Customization(platform="Bad Id")


def test_invalid_config_is_rejected_before_anything(tmp_path):
    bad = tmp_path / "bad.ign"
    bad.write_text(json.dumps({"ignition": {"version": "3.3.0"},
                               "storage": {"files": [{"path": "relative/path"}]}}))
    with pytest.raises(InvalidConfigError, match="storage.files"):
        load_customization(ignition=str(bad))
    newer = tmp_path / "newer.ign"
    newer.write_text(json.dumps({"ignition": {"version": "3.4.0"},
                                 "storage": {"luks": [{"name": "x", "device": "/dev/vda",
                                                       "discard": True}]}}))
    with pytest.raises(InvalidConfigError, match="does not support"):
        load_customization(ignition=str(newer))


# --------------------------------------------------------------------------- on images


def test_customize_in_place(tmp_path):
    img = make_disk(tmp_path)
    c = load_customization(ignition=str(DEMO), karg_append=["quiet"], karg_delete=["rw"],
                           platform="qemu")
    rep = customize_image(img, c)
    assert rep.backend == "debugfs"
    with boot_fs(img) as fs:
        assert fs.read("/ignition/config.ign") == DEMO.read_bytes()
        assert fs.exists("/ignition.firstboot")
        entry = fs.read("/loader/entries/ostree-1-debian.conf").decode()
        cfg = fs.read("/grub/grub.cfg").decode()
        modes = {e.name: e.mode for e in fs.listdir("/ignition")}
        root_modes = {e.name: e.mode for e in fs.listdir("/")}
    opts = cz.bls_options(entry).split()
    assert "quiet" in opts and "rw" not in opts and "ignition.platform.id=qemu" in opts
    assert "ignition.platform.id=metal" not in opts
    # grub.cfg regenerated with the same settings and the new options
    assert f"  linux /ostree/debian-{CSUM}/vmlinuz-6.1.0-1-amd64 {' '.join(opts)}" in cfg
    assert "set timeout=3" in cfg and "serial --unit=0 --speed=115200" in cfg
    assert modes["config.ign"] & 0o7777 == 0o600 and root_modes["ignition"] & 0o7777 == 0o700
    subprocess.run(["e2fsck", "-fn", f"{img}?offset={2048 * 2 * 512}"], check=True,
                   capture_output=True)


def test_customize_output_leaves_input(tmp_path):
    img = make_disk(tmp_path)
    before = sha(img)
    out = tmp_path / "out.raw"
    customize_image(img, load_customization(firstboot=False), output=out)
    assert sha(img) == before
    with boot_fs(out) as fs:
        assert not fs.exists("/ignition.firstboot")
    assert os.path.getsize(out) == os.path.getsize(img)
    # no clobbering without force
    with pytest.raises(UserInputError, match="exists"):
        customize_image(img, load_customization(firstboot=True), output=out)
    customize_image(img, load_customization(firstboot=True), output=out, force=True)
    with boot_fs(out) as fs:
        assert fs.exists("/ignition.firstboot")


def test_firstboot_literal_added_when_missing(tmp_path):
    img = make_disk(tmp_path, firstboot=False)
    with boot_fs(img) as fs:
        fs.write("/loader/entries/ostree-1-debian.conf",
                 _bls(OPTIONS.replace(" $ignition_firstboot", "")).encode())
        fs.commit()
    customize_image(img, load_customization(ignition=str(DEMO)))
    with boot_fs(img) as fs:
        assert "$ignition_firstboot" in fs.read("/loader/entries/ostree-1-debian.conf").decode()
        assert fs.exists("/ignition.firstboot")


def test_foreign_grub_cfg_left_alone(tmp_path):
    img = make_disk(tmp_path, grub_cfg=False)
    with boot_fs(img) as fs:
        fs.mkdir("/grub")
        fs.write("/grub/grub.cfg", b"insmod blscfg\nblscfg\n")
        fs.commit()
    rep = customize_image(img, load_customization(karg_append=["x=1"]))
    assert any("left alone" in ch for ch in rep.changes)
    with boot_fs(img) as fs:
        assert fs.read("/grub/grub.cfg") == b"insmod blscfg\nblscfg\n"


def test_failure_leaves_image_untouched(tmp_path, monkeypatch):
    img = make_disk(tmp_path)
    before = sha(img)

    def broken_fsck(self):
        raise ToolError("e2fsck finds it inconsistent (simulated)")

    monkeypatch.setattr(Ext4Fs, "fsck", broken_fsck)
    with pytest.raises(ToolError, match="simulated"):
        customize_image(img, load_customization(ignition=str(DEMO), karg_append=["a=1"]))
    assert sha(img) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".disk.raw")]  # no temp left


def test_not_an_fcos_image(tmp_path):
    img = tmp_path / "plain.raw"
    img.write_bytes(b"\0" * MIB)
    with pytest.raises(BadImageError, match="GPT"):
        customize_image(img, load_customization(firstboot=True))
    img2 = make_disk(tmp_path, "nobls.raw")
    with boot_fs(img2) as fs:
        fs.remove("/loader.1/entries/ostree-1-debian.conf")
        fs.commit()
    with pytest.raises(BadImageError, match="no BLS entries"):
        customize_image(img2, load_customization(firstboot=True))


@pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
                    reason="needs qemu-utils")
def test_customize_qcow2_in_place_and_output(tmp_path):
    from imagebuilder.image.inspect import inspect_image

    raw = make_disk(tmp_path)
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=65536", str(raw),
                    str(qcow)], check=True)
    rep = customize_image(qcow, load_customization(ignition=str(DEMO), karg_append=["q=1"]))
    assert rep.backend == "debugfs + qemu-io (qcow2)"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(qcow)],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["cluster-size"] == 65536
    subprocess.run(["qemu-img", "check", str(qcow)], check=True, capture_output=True)
    got = inspect_image(qcow)
    assert got["format"] == "qcow2" and got["boot"]["ignition_config"]["size"] == len(DEMO.read_bytes())
    assert "q=1" in got["boot"]["entries"][0]["options"].split()
    before = sha(qcow)
    out = tmp_path / "out.qcow2"
    customize_image(qcow, load_customization(firstboot=False), output=out)
    assert sha(qcow) == before
    assert inspect_image(out)["boot"]["firstboot_stamp"] is False
    assert inspect_image(qcow)["boot"]["firstboot_stamp"] is True
