"""The QEMU runner (`imagebuilder boot` / `imagebuilder.boot.boot`) against real guests.

Guests are tiny so the suite stays fast under TCG: the host kernel with a busybox
initramfs (direct kernel boot, ~5 s) and Debian's iPXE ISO (~1 s to its banner).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from imagebuilder.boot import BootResult, boot
from imagebuilder.boot import qemu as q

IPXE_ISO = Path("/usr/lib/ipxe/ipxe.iso")
IPXE_BANNER = r"iPXE initialising devices"


def _kernel() -> Path:
    k = q.host_kernel()
    if k is None:
        pytest.skip("no kernel in /boot (apt-get install linux-image-amd64)")
    return k


def _fw_cfg_module(kernel: Path) -> Path | None:
    kver = kernel.name.removeprefix("vmlinuz-")
    found = list(Path(f"/lib/modules/{kver}").rglob("qemu_fw_cfg.ko"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> dict:
    """Host kernel + initramfs whose /init prints the fw_cfg Ignition config and a marker."""
    kernel = _kernel()
    mod = _fw_cfg_module(kernel)
    init = """#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -f /qemu_fw_cfg.ko ] && insmod /qemu_fw_cfg.ko
F=/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw
if [ -r $F ]; then echo "FWCFG-BEGIN"; cat $F; echo; echo "FWCFG-END"; else echo "FWCFG-NONE"; fi
echo "CMDLINE: $(cat /proc/cmdline)"
echo "RUNNER-TEST-DONE"
grep -q hold /proc/cmdline && sleep 600
poweroff -f
"""
    extra = []
    if mod is not None:
        extra.append(("qemu_fw_cfg.ko", stat.S_IFREG | 0o644, mod.read_bytes()))
    d = tmp_path_factory.mktemp("guest")
    initrd = d / "initrd.gz"
    initrd.write_bytes(q.busybox_initramfs(init, extra=extra))
    return {"kernel": kernel, "initrd": initrd, "fw_cfg": mod is not None}


@pytest.mark.qemu
def test_accel_auto_probes_once_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("IMAGEBUILDER_ACCEL", raising=False)
    first = q.resolve_accel("auto")
    assert first in ("kvm", "tcg")
    cache = tmp_path / "imagebuilder" / "accel.json"
    if os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK) and q.host_kernel():
        data = json.loads(cache.read_text())
        (verdict,) = data.values()
        assert verdict["kvm"] == (first == "kvm")
        assert verdict["qemu"].startswith("QEMU")
        # the cached verdict is used: flip it and auto follows the cache, no new probe
        for v in data.values():
            v["kvm"] = not v["kvm"]
        cache.write_text(json.dumps(data))
        assert q.resolve_accel("auto") == ("tcg" if first == "kvm" else "kvm")
    else:
        assert first == "tcg"
    monkeypatch.setenv("IMAGEBUILDER_ACCEL", "tcg")
    assert q.resolve_accel("auto") == "tcg"


@pytest.mark.qemu
def test_expect_matches_and_ignition_arrives_via_fw_cfg(guest, tmp_path):
    ign = tmp_path / "config.ign"
    ign.write_text('{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"fwcfg-user"}]}}')
    log = tmp_path / "console.log"
    res = boot(None, kernel=guest["kernel"], initrds=[guest["initrd"]],
               kargs=["console=ttyS0", "quiet", "panic=-1", "runner.test=1"], memory=512,
               ignition=ign, expect=r"RUNNER-TEST-DONE", timeout=180, log_path=log)
    assert isinstance(res, BootResult)
    assert res.matched, res.output[-2000:]
    assert res.reason == "matched" and res.match == "RUNNER-TEST-DONE"
    assert 0 < res.duration < 180
    assert "runner.test=1" in res.output
    if guest["fw_cfg"]:
        body = re.search(r"FWCFG-BEGIN\n(.*?)\nFWCFG-END", res.output, re.S)
        assert body, res.output[-2000:]
        assert json.loads(body.group(1))["passwd"]["users"][0]["name"] == "fwcfg-user"
    # the raw console went to the log too
    assert b"RUNNER-TEST-DONE" in log.read_bytes()


@pytest.mark.qemu
@pytest.mark.slow
def test_guest_exit_before_expect_is_a_negative_verdict(guest):
    res = boot(None, kernel=guest["kernel"], initrds=[guest["initrd"]],
               kargs=["console=ttyS0", "quiet", "panic=-1"], memory=512,
               expect=r"THIS-NEVER-APPEARS", timeout=180)
    assert not res.matched
    assert res.reason == "powered-off"
    assert "RUNNER-TEST-DONE" in res.output
    # without expect, a guest that powers off by itself is a success
    res = boot(None, kernel=guest["kernel"], initrds=[guest["initrd"]],
               kargs=["console=ttyS0", "quiet", "panic=-1"], memory=512, timeout=180)
    assert res.matched and res.reason == "powered-off"


@pytest.mark.qemu
def test_timeout_kills_the_guest(guest):
    res = boot(None, kernel=guest["kernel"], initrds=[guest["initrd"]],
               kargs=["console=ttyS0", "quiet", "hold"], memory=512,
               expect=r"THIS-NEVER-APPEARS", timeout=20)
    assert not res.matched and res.reason == "timeout"
    assert 19 < res.duration < 40


@pytest.mark.qemu
def test_iso_as_cdrom_and_as_hybrid_disk():
    cd = boot(IPXE_ISO, accel="tcg", memory=256, expect=IPXE_BANNER, timeout=120)
    assert cd.matched, cd.output[-1500:]
    assert "Booting from DVD/CD" in cd.output
    assert "-cdrom" not in cd.argv and any("media=cdrom" in a for a in cd.argv)
    disk = boot(IPXE_ISO, accel="tcg", memory=256, hybrid_disk=True, expect=IPXE_BANNER, timeout=120)
    assert disk.matched, disk.output[-1500:]
    assert "Booting from Hard Disk" in disk.output


@pytest.mark.qemu
def test_disk_format_detected_qcow2(tmp_path):
    qcow = tmp_path / "ipxe.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(IPXE_ISO), str(qcow)], check=True)
    assert q.disk_format(qcow) == "qcow2"
    assert q.disk_format(IPXE_ISO) == "raw"
    res = boot(qcow, accel="tcg", memory=256, expect=IPXE_BANNER, timeout=120, snapshot=True)
    assert res.matched, res.output[-1500:]
    assert any("format=qcow2" in a for a in res.argv)


@pytest.mark.qemu
def test_cli_expect_exit_codes_stream_and_log(cli, tmp_path):
    log = tmp_path / "c.log"
    ok = cli("boot", str(IPXE_ISO), "--accel", "tcg", "-m", "256", "--expect", IPXE_BANNER,
             "--timeout", "120", "--log", str(log))
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"iPXE initialising devices" in ok.stdout       # console streamed to the user
    assert b"iPXE initialising devices" in log.read_bytes()
    assert b"expectation met" in ok.stderr

    miss = cli("boot", str(IPXE_ISO), "--accel", "tcg", "-m", "256", "--expect", "NOT-THERE",
               "--timeout", "8", "--json", "-q")
    assert miss.returncode == 1, miss.stderr.decode()
    verdict = json.loads(miss.stdout)
    assert verdict["matched"] is False and verdict["reason"] == "timeout"
    assert b"error: --expect 'NOT-THERE' not seen: timed out" in miss.stderr


@pytest.mark.qemu
def test_cli_input_errors(cli, tmp_path):
    r = cli("boot", str(tmp_path / "missing.img"), "--accel", "tcg")
    assert r.returncode == 2 and b"image not found" in r.stderr
    r = cli("boot", str(IPXE_ISO), "--accel", "warp")
    assert r.returncode == 2 and b"unknown accelerator" in r.stderr
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    r = cli("boot", str(disk), "--karg", "x=1", "--accel", "tcg")
    assert r.returncode == 2 and b"need --kernel" in r.stderr
    r = cli("boot", str(IPXE_ISO), "--expect", "(", "--accel", "tcg")
    assert r.returncode == 2 and b"invalid regular expression" in r.stderr


# ----------------------------------------------------------------------- no guest needed

def test_build_argv_firmware_media_and_fw_cfg(tmp_path):
    ign = tmp_path / "c.ign"
    ign.write_text("{}")
    argv = q.build_argv(IPXE_ISO, workdir=tmp_path, uefi=True, accel="tcg", memory=1024,
                        ignition=ign)
    s = " ".join(argv)
    assert "-accel tcg,thread=multi" in s and "-m 1024" in s and "-machine q35" in s
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE" in s
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/OVMF_VARS.fd" in s
    assert (tmp_path / "OVMF_VARS.fd").stat().st_size > 0      # a private, writable copy
    assert f"-fw_cfg name=opt/com.coreos/config,file={ign}" in s
    assert "media=cdrom" in s and "-serial mon:stdio" in s and "-no-reboot" in s
    hybrid = " ".join(q.build_argv(IPXE_ISO, workdir=tmp_path, hybrid_disk=True, accel="kvm"))
    assert "-accel kvm -cpu host" in hybrid and "-machine pc" in hybrid
    assert "format=raw,if=none,id=disk0,readonly=on" in hybrid and "media=cdrom" not in hybrid
    four_k = " ".join(q.build_argv(IPXE_ISO, workdir=tmp_path, hybrid_disk=True, block_size=4096))
    assert "virtio-blk-pci,drive=disk0,bootindex=0,logical_block_size=4096,physical_block_size=4096" in four_k
    with pytest.raises(Exception, match="exclude each other"):
        q.build_argv(IPXE_ISO, workdir=tmp_path, cdrom=True, hybrid_disk=True)


def test_console_cleaner_handles_split_escapes():
    c = q._Cleaner()
    raw = "\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n\x1b[0;1miPXE\x1b[0m ok\r\nCount: 3\x08 \x082\r\n".encode()
    out = "".join(c.feed(raw[i:i + 3]) for i in range(0, len(raw), 3)) + c.feed(b"", final=True)
    assert out == "SeaBIOS\niPXE ok\nCount: 2\n"
    # a UTF-8 character split across reads survives
    c = q._Cleaner()
    data = "naïve\n".encode()
    assert c.feed(data[:3]) + c.feed(data[3:]) == "naïve\n"


def test_newc_archive_is_readable_by_cpio(tmp_path):
    from imagebuilder.iso.cpio import write_newc

    arc = write_newc([("d", stat.S_IFDIR | 0o755, b""), ("d/f", stat.S_IFREG | 0o644, b"hello"),
                      ("l", stat.S_IFLNK | 0o777, b"d/f"), ("dev/console", stat.S_IFCHR | 0o600, (5, 1))],
                     first_ino=1, trailer_ino=None, block=512)
    assert len(arc) % 512 == 0
    listing = subprocess.run(["cpio", "-itv"], input=arc, capture_output=True, check=True).stdout.decode()
    assert re.search(r"^drwxr-xr-x .* d$", listing, re.M)
    assert re.search(r"^-rw-r--r-- .* 5 .* d/f$", listing, re.M)
    assert re.search(r"^lrwxrwxrwx .* l -> d/f$", listing, re.M)
    assert re.search(r"^crw------- .* 5,\s+1 .* dev/console$", listing, re.M)
