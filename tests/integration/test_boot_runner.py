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

pytestmark = pytest.mark.qemu

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


def test_timeout_kills_the_guest(guest):
    res = boot(None, kernel=guest["kernel"], initrds=[guest["initrd"]],
               kargs=["console=ttyS0", "quiet", "hold"], memory=512,
               expect=r"THIS-NEVER-APPEARS", timeout=20)
    assert not res.matched and res.reason == "timeout"
    assert 19 < res.duration < 40


def test_iso_as_cdrom_and_as_hybrid_disk():
    cd = boot(IPXE_ISO, accel="tcg", memory=256, expect=IPXE_BANNER, timeout=120)
    assert cd.matched, cd.output[-1500:]
    assert "Booting from DVD/CD" in cd.output
    assert "-cdrom" not in cd.argv and any("media=cdrom" in a for a in cd.argv)
    disk = boot(IPXE_ISO, accel="tcg", memory=256, hybrid_disk=True, expect=IPXE_BANNER, timeout=120)
    assert disk.matched, disk.output[-1500:]
    assert "Booting from Hard Disk" in disk.output


def test_disk_format_detected_qcow2(tmp_path):
    qcow = tmp_path / "ipxe.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(IPXE_ISO), str(qcow)], check=True)
    assert q.disk_format(qcow) == "qcow2"
    assert q.disk_format(IPXE_ISO) == "raw"
    res = boot(qcow, accel="tcg", memory=256, expect=IPXE_BANNER, timeout=120, snapshot=True)
    assert res.matched, res.output[-1500:]
    assert any("format=qcow2" in a for a in res.argv)


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


def test_cli_input_errors(cli, tmp_path):
    r = cli("boot", str(tmp_path / "missing.img"), "--accel", "tcg")
    assert r.returncode == 2 and b"image not found" in r.stderr
    r = cli("boot", str(IPXE_ISO), "--accel", "warp")
    assert r.returncode == 2 and b"unknown accelerator" in r.stderr
    r = cli("boot", str(IPXE_ISO), "--karg", "x=1", "--accel", "tcg")
    assert r.returncode == 2 and b"need --kernel" in r.stderr
    r = cli("boot", str(IPXE_ISO), "--expect", "(", "--accel", "tcg")
    assert r.returncode == 2 and b"invalid regular expression" in r.stderr
