"""End to end: customize the CoreOS-style live ISO fixture and boot it under QEMU.

The fixture (fixtures/liveiso/make_liveiso.py) boots Debian's kernel with a busybox
initramfs whose /init prints what the embed areas delivered: /config.ign (from the
Ignition area, images/ignition.img, loaded as a 2nd initrd), the network keyfiles and
/proc/cmdline (from the kargs areas of isolinux.cfg / grub.cfg). We check each one
arrives through ISOLINUX (SeaBIOS, as a CD and as a hybrid disk) and GRUB (OVMF).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import urllib.parse
from pathlib import Path

import pytest

from imagebuilder.boot import boot

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_liveiso", REPO / "fixtures/liveiso/make_liveiso.py")
liveiso = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(liveiso)

IGN = {"ignition": {"version": "3.3.0"},
       "storage": {"files": [{"path": "/etc/ib-live-marker",
                              "contents": {"source": "data:,ignition-reached-the-live-initramfs"}}]}}
KEYFILE = """[connection]
id=ib-static-eth0
type=ethernet
interface-name=eth0

[ipv4]
method=manual
address1=192.0.2.10/24,192.0.2.1
"""
KARG = "ib.test=live-karg-42"


@pytest.fixture(scope="session")
def pristine_iso() -> Path:
    return liveiso.build_liveiso()


@pytest.fixture(scope="module")
def customized_iso(pristine_iso, tmp_path_factory) -> Path:
    from tests.conftest import run_cli as cli

    d = tmp_path_factory.mktemp("live")
    ign = d / "config.ign"
    ign.write_text(json.dumps(IGN))
    key = d / "ib-static-eth0.nmconnection"
    key.write_text(KEYFILE)
    out = d / "custom.iso"
    r = cli("iso", "customize", "--live-ignition", str(ign), "--network-keyfile", str(key),
            "--live-karg-append", KARG, "-o", str(out), str(pristine_iso))
    assert r.returncode == 0, r.stderr.decode()
    return out


def _configs(ign_text: str) -> list[dict]:
    """The config and every config it merges/replaces through data: URLs (customize wraps)."""
    out = [json.loads(ign_text)]
    for cfg in list(out):
        refs = cfg.get("ignition", {}).get("config", {})
        for ref in [*refs.get("merge", []), *([refs["replace"]] if refs.get("replace") else [])]:
            src = ref.get("source", "")
            if not src.startswith("data:"):
                continue
            meta, _, payload = src[5:].partition(",")
            raw = base64.b64decode(payload) if meta.endswith(";base64") else \
                urllib.parse.unquote_to_bytes(payload)
            if (ref.get("compression") or "") == "gzip":
                raw = gzip.decompress(raw)
            out.extend(_configs(raw.decode()))
    return out


def _check_report(res, *, customized: bool) -> None:
    assert res.matched, res.output[-3000:]
    report = liveiso.parse_console(res.output)
    assert "console=ttyS0" in report["cmdline"]
    assert "coreos.liveiso=ib-live-fixture" in report["cmdline"]
    if not customized:
        assert report["ignition"] is None
        assert report["keyfiles"] == {}
        assert KARG not in report["cmdline"]
        return
    assert KARG in report["cmdline"].split()
    assert report["ignition"], res.output[-3000:]
    assert IGN in _configs(report["ignition"])
    assert report["keyfiles"] == {"ib-static-eth0.nmconnection": KEYFILE.rstrip("\n")}


def test_fixture_layout_matches_cosa(pristine_iso, tmp_path):
    """kargs.json points at '#'-padded areas holding the default kargs in both configs."""
    data = pristine_iso.read_bytes()
    import subprocess

    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(pristine_iso),
                    "-extract", "/coreos", str(tmp_path / "coreos"),
                    "-extract", "/isolinux/isolinux.cfg", str(tmp_path / "isolinux.cfg"),
                    "-extract", "/EFI/fedora/grub.cfg", str(tmp_path / "grub.cfg")],
                   check=True, capture_output=True)
    kargs = json.loads((tmp_path / "coreos/kargs.json").read_text())
    assert json.loads((tmp_path / "coreos/igninfo.json").read_text()) == {"file": "images/ignition.img"}
    assert json.loads((tmp_path / "coreos/features.json").read_text())["live-initrd-network"] is True
    assert kargs["size"] == len(kargs["default"]) + 1024
    for f in kargs["files"]:
        cfg = (tmp_path / Path(f["path"]).name).read_bytes()
        area = cfg[f["offset"]:f["offset"] + kargs["size"]]
        assert area == (kargs["default"] + "\n").encode() + b"#" * (kargs["size"] - len(kargs["default"]) - 1)
        assert cfg[f["offset"] + kargs["size"]:].startswith(b"# COREOS_KARG_EMBED_AREA\n")
    # ignition.img: a zero-filled 256 KiB area, loaded as 2nd initrd by both bootloaders
    assert b"initrd=/images/pxeboot/initrd.img,/images/ignition.img " in (tmp_path / "isolinux.cfg").read_bytes()
    assert b"initrd /images/pxeboot/initrd.img /images/ignition.img" in (tmp_path / "grub.cfg").read_bytes()
    assert len(data) % 2048 == 0 and data[0x1fe:0x200] == b"\x55\xaa"   # isohybrid MBR


def test_fixture_build_is_deterministic(pristine_iso, tmp_path):
    again = liveiso.make_liveiso(tmp_path / "again.iso")
    sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    assert sha(again) == sha(pristine_iso)


@pytest.mark.qemu
def test_customized_iso_bios_cdrom(customized_iso):
    res = boot(customized_iso, accel="auto", memory=1024, expect=liveiso.MARK_END, timeout=300)
    _check_report(res, customized=True)
    assert "ISOLINUX" in res.output


@pytest.mark.qemu
def test_customized_iso_uefi_cdrom(customized_iso):
    res = boot(customized_iso, uefi=True, accel="auto", memory=1024, expect=liveiso.MARK_END,
               timeout=300)
    _check_report(res, customized=True)
    assert "BdsDxe" in res.output or "GRUB" in res.output


@pytest.mark.qemu
@pytest.mark.slow
def test_customized_iso_as_hybrid_disk_uefi(customized_iso):
    """The isohybrid GPT + efiboot.img path (a USB stick on a UEFI machine)."""
    res = boot(customized_iso, uefi=True, hybrid_disk=True, accel="auto", memory=1024,
               expect=liveiso.MARK_END, timeout=300)
    _check_report(res, customized=True)


@pytest.mark.qemu
def test_direct_boot_of_iso_entry_with_extra_karg(customized_iso, cli, tmp_path):
    """`boot ISO --karg X`: the ISO's default ISOLINUX entry is booted directly (its kernel,
    both initrds incl. the Ignition area, its current kargs incl. the embed area's) plus X."""
    from imagebuilder.boot.qemu import _Cleaner

    log = tmp_path / "console.log"
    r = cli("boot", str(customized_iso), "--karg", "ib.direct=1", "--memory", "1024", "-q",
            "--expect", liveiso.MARK_END, "--timeout", "300", "--log", str(log))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    text = _Cleaner().feed(log.read_bytes(), final=True)
    report = liveiso.parse_console(text)
    cmdline = report["cmdline"].split()
    assert cmdline[-2:] == [KARG, "ib.direct=1"]
    assert "BOOT_IMAGE=/images/pxeboot/vmlinuz" not in cmdline      # no boot loader involved
    assert IGN in _configs(report["ignition"])
    assert report["keyfiles"] == {"ib-static-eth0.nmconnection": KEYFILE.rstrip("\n")}
