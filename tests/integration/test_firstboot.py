"""Ignition first boot in built Debian OSTree images, verified from inside (QEMU TCG).

One Debian build (fixtures/images/debian-ignition.yaml, ~5 min, cached by the engine)
plus a variant without an embedded config (only deploy/grub/disk rerun). The demo
config's check unit prints ``imagebuilder-firstboot NAME ok|fail`` lines on the serial
console and powers off; its kernelArguments make the initramfs reboot once (QEMU runs
with -no-reboot, so that reboot ends one QEMU run and the next run continues the same
first boot).

Scenarios: (1) embedded config (metal): files in /etc and /var/lib, a unit enabled by
Ignition, user core with an SSH key sshd accepts, kernel arguments applied; second boot
without Ignition, stamp and config gone; (2) no embedded config, config via fw_cfg
(qemu platform); (3) customize-image on the pristine image, raw and qcow2 (qemu-io path); (4) a config
that fails at apply time stops in emergency mode and leaves the stamp + config, a fixed
config injected afterwards applies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from imagebuilder.boot.qemu import boot
from imagebuilder.image.customize import customize_image, load_customization
from imagebuilder.image.inspect import inspect_image

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
DEFINITION = REPO / "fixtures/images/debian-ignition.yaml"
DEMO = REPO / "fixtures/ignition/firstboot-demo.ign"
BROKEN = REPO / "fixtures/ignition/firstboot-broken.ign"
IB = [sys.executable, "-m", "imagebuilder"]
DONE = re.compile(r"imagebuilder-firstboot-done (ok|fail[^\n]*)")
EMERGENCY = re.compile(r"emergency mode|rdsosreport|Emergency Mode")
BOOT_TIMEOUT = float(os.environ.get("IMAGEBUILDER_TEST_BOOT_TIMEOUT", "900"))
CHECKS = ("etc-file", "var-file", "unit-enabled", "user-core", "ssh-key", "karg-added", "karg-removed")


def build(definition: Path, out: Path) -> Path:
    t0 = time.monotonic()
    # only the commit is kept in the cache: both definitions share it, and the disk is tight
    subprocess.run([*IB, "build", str(definition), "-o", str(out), "-f", "-q",
                    "--checkpoint", "commit"], check=True, cwd=REPO, timeout=3600)
    print(f"build {definition.name}: {time.monotonic() - t0:.0f} s")
    (img,) = out.glob("*.raw")
    return img


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("firstboot")


@pytest.fixture
def scratch(work):
    """Per-test image copies, removed afterwards (each is ~1 GiB of allocated blocks)."""
    made: list[Path] = []
    yield made
    for p in made:
        p.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def embedded_image(work) -> Path:
    """Built with the demo config embedded (metal)."""
    return build(DEFINITION, work / "embedded")


@pytest.fixture(scope="module")
def pristine_image(work, embedded_image) -> Path:
    """Same definition without ignition.config, platform qemu (the tree is reused)."""
    d = yaml.safe_load(DEFINITION.read_text())
    d["name"] = "debian-ignition-noconfig"
    d["ignition"] = {"platform": "qemu", "firstboot": True}
    defn = work / "noconfig.yaml"
    defn.write_text(yaml.safe_dump(d))
    return build(defn, work / "noconfig")


def copy(img: Path, dest: Path, scratch: list[Path]) -> Path:
    scratch.append(dest)
    subprocess.run(["cp", "--sparse=always", str(img), str(dest)], check=True)
    return dest


def first_boot(image: Path, *, ignition: Path | None = None, max_runs: int = 3) -> list[str]:
    """Boot until the check unit has reported and powered off, following the kargs reboot
    (each QEMU run ends at a reboot or poweroff); stops early on emergency mode."""
    outputs = []
    for _ in range(max_runs):
        res = boot(image, ignition=ignition, expect=EMERGENCY, timeout=BOOT_TIMEOUT, accel="tcg")
        outputs.append(res.output)
        print(f"boot run {len(outputs)}: {res.reason} after {res.duration:.0f} s")
        assert res.reason != "matched", "emergency mode:\n" + res.output[-4000:]
        assert res.reason == "powered-off", res.output[-4000:]
        if DONE.search(res.output):
            break
    return outputs


def checks(output: str) -> dict[str, str]:
    return dict(re.findall(r"imagebuilder-firstboot (\S+) (ok|fail)", output))


def info(output: str) -> dict[str, str]:
    line = re.findall(r"imagebuilder-firstboot-info (firstboot=.*)", output)
    return dict(kv.split("=", 1) for kv in line[-1].split()) if line else {}


def assert_provisioned(outputs: list[str]) -> None:
    last = outputs[-1]
    m = DONE.search(last)
    assert m, last[-4000:]
    got = checks(last)
    assert {c: got.get(c) for c in CHECKS} == {c: "ok" for c in CHECKS}, last[-4000:]
    assert m.group(1) == "ok"
    i = info(last)
    assert i["firstboot"] == "yes" and i["ignition-ran"] == "yes"
    assert i["stamp"] == "absent" and i["config"] == "absent"  # firstboot-complete ran first
    # the kargs stage changed the BLS entry and rebooted once before provisioning went on
    assert len(outputs) == 2, [o[-500:] for o in outputs]
    assert re.search(r"kernel arguments|Restarting system|reboot", outputs[0]), outputs[0][-3000:]


def assert_second_boot(image: Path) -> None:
    res = boot(image, timeout=BOOT_TIMEOUT, accel="tcg")
    assert res.reason == "powered-off" and DONE.search(res.output), res.output[-4000:]
    i = info(res.output)
    assert i["firstboot"] == "no" and i["ignition-ran"] == "no", res.output[-3000:]
    assert i["stamp"] == "absent" and i["config"] == "absent"
    assert checks(res.output).get("etc-file") == "ok"
    print(f"second boot: {res.duration:.0f} s")


def test_embedded_config_first_and_second_boot(embedded_image, work, scratch):
    img = copy(embedded_image, work / "s1.raw", scratch)
    rep = inspect_image(img)
    assert rep["boot"]["firstboot_stamp"] and rep["boot"]["ignition_config"] is not None
    assert rep["boot"]["entries"][0]["platform"] == "metal"
    outputs = first_boot(img)
    assert_provisioned(outputs)
    rep = inspect_image(img)
    assert not rep["boot"]["firstboot_stamp"] and rep["boot"]["ignition_config"] is None
    assert "imagebuilder.demo=1" in rep["boot"]["entries"][0]["options"].split()
    assert_second_boot(img)


def test_fw_cfg_config_on_image_without_embedded_config(pristine_image, work, scratch):
    img = copy(pristine_image, work / "s2.raw", scratch)
    rep = inspect_image(img)
    assert rep["boot"]["ignition_config"] is None and rep["boot"]["firstboot_stamp"]
    assert rep["boot"]["entries"][0]["platform"] == "qemu"
    assert_provisioned(first_boot(img, ignition=DEMO))


def test_customize_image_raw_then_boot(pristine_image, work, scratch):
    img = work / "s3.raw"
    scratch.append(img)
    t0 = time.monotonic()
    subprocess.run([*IB, "customize-image", str(pristine_image), "--ignition", str(DEMO),
                    "--platform", "metal", "-o", str(img)], check=True, cwd=REPO)
    print(f"customize-image -o (4 GiB raw): {time.monotonic() - t0:.1f} s")
    assert_provisioned(first_boot(img))


def test_customize_image_qcow2_then_boot(pristine_image, work, scratch):
    qcow = work / "s3.qcow2"
    scratch.append(qcow)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(pristine_image), str(qcow)], check=True)
    rep = customize_image(qcow, load_customization(ignition=str(DEMO), platform="metal"))
    assert rep.backend == "debugfs + qemu-io (qcow2)"
    assert_provisioned(first_boot(qcow))


def test_broken_config_stops_in_emergency_then_fixed_config_applies(pristine_image, work, scratch):
    """firstboot-broken.ign is valid (ours and ignition-validate agree) but its merged config's
    hash does not match: Ignition fails in fetch-offline, before anything is written."""
    img = copy(pristine_image, work / "s4.raw", scratch)
    customize_image(img, load_customization(ignition=str(BROKEN), platform="metal"))
    before = inspect_image(img)["boot"]
    res = boot(img, expect=EMERGENCY, timeout=BOOT_TIMEOUT, accel="tcg")
    assert res.reason == "matched", res.output[-4000:]
    assert not DONE.search(res.output)
    # systemd ellipsizes long unit names on the console ("ignition-f…ce - Ignition
    # (fetch-offline)"), so match the unit's description
    assert re.search(r"Failed to start .*Ignition \(fetch-offline\)", res.output), res.output[-4000:]
    assert "Starting ignition-files" not in res.output
    after = inspect_image(img)["boot"]
    assert after == before, "the failed first boot must leave the boot partition as it was"
    assert after["firstboot_stamp"] and after["ignition_config"] is not None
    customize_image(img, load_customization(ignition=str(DEMO)))
    outputs = first_boot(img)
    last = outputs[-1]
    assert DONE.search(last) and DONE.search(last).group(1) == "ok", last[-4000:]
    assert {c: checks(last).get(c) for c in CHECKS} == {c: "ok" for c in CHECKS}
