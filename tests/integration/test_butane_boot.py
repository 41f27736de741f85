"""A Butane config applied on the first boot of the Ignition-enabled Debian image (QEMU TCG).

fixtures/butane/boot/firstboot.bu is translated by ``imagebuilder butane translate`` (what a
user runs) and given to Ignition through fw_cfg (platform qemu). It uses the sugar users
rely on: ``storage.trees`` (a file, an executable, a symlink), ``kernel_arguments`` (one
reboot, as Ignition's kargs stage does) and a ``with_mount_unit`` ext4 filesystem on a
second, blank disk. The config's check unit prints ``imagebuilder-butane NAME ok|fail``
lines on the serial console and powers off; afterwards the second disk is read on the host.
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

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
DEFINITION = REPO / "fixtures/images/debian-ignition.yaml"
BUTANE = REPO / "fixtures/butane/boot/firstboot.bu"
FILES = REPO / "fixtures/butane/boot/files"
IB = [sys.executable, "-m", "imagebuilder"]
DONE = re.compile(r"imagebuilder-butane-done (ok|fail[^\n]*)")
EMERGENCY = re.compile(r"emergency mode|rdsosreport|Emergency Mode")
BOOT_TIMEOUT = float(os.environ.get("IMAGEBUILDER_TEST_BOOT_TIMEOUT", "900"))
CHECKS = ("tree-file", "tree-exec", "tree-mode", "tree-link", "karg", "mount-unit", "mounted",
          "data-disk", "write")


@pytest.fixture(scope="module")
def pristine_image(tmp_path_factory) -> Path:
    """The Ignition-enabled Debian image without an embedded config (platform qemu: Ignition
    reads the config from fw_cfg)."""
    work = tmp_path_factory.mktemp("butane-boot")
    d = yaml.safe_load(DEFINITION.read_text())
    d["name"] = "debian-ignition-noconfig"
    d["ignition"] = {"platform": "qemu", "firstboot": True}
    defn = work / "noconfig.yaml"
    defn.write_text(yaml.safe_dump(d))
    t0 = time.monotonic()
    subprocess.run([*IB, "build", str(defn), "-o", str(work / "out"), "-f", "-q", "--checkpoint", "commit"],
                   check=True, cwd=REPO, timeout=3600)
    print(f"build: {time.monotonic() - t0:.0f} s")
    (img,) = (work / "out").glob("*.raw")
    return img


def test_butane_config_applied_on_first_boot(pristine_image, tmp_path):
    config = tmp_path / "firstboot.ign"
    subprocess.run([*IB, "butane", "translate", str(BUTANE), "--files-dir", str(FILES), "-o", str(config)],
                   check=True, cwd=REPO)
    img = tmp_path / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(pristine_image), str(img)], check=True)
    data = tmp_path / "data.raw"
    with open(data, "wb") as f:
        f.truncate(64 << 20)  # blank: Ignition makes the filesystem
    disk = ["-drive", f"file={data},format=raw,if=none,id=data",
            "-device", "virtio-blk-pci,drive=data,serial=ibdata"]
    outputs = []
    for _ in range(3):  # the kargs stage reboots once; each QEMU run ends at a reboot or poweroff
        res = boot(img, ignition=config, expect=EMERGENCY, timeout=BOOT_TIMEOUT, accel="tcg",
                   extra_args=disk)
        outputs.append(res.output)
        print(f"boot run {len(outputs)}: {res.reason} after {res.duration:.0f} s")
        assert res.reason != "matched", "emergency mode:\n" + res.output[-4000:]
        assert res.reason == "powered-off", res.output[-4000:]
        if DONE.search(res.output):
            break
    last = outputs[-1]
    m = DONE.search(last)
    assert m, last[-4000:]
    got = dict(re.findall(r"imagebuilder-butane (\S+) (ok|fail)", last))
    assert {c: got.get(c) for c in CHECKS} == {c: "ok" for c in CHECKS}, last[-4000:]
    assert m.group(1) == "ok"
    assert len(outputs) == 2, "kernel_arguments should cost exactly one reboot"
    # the second disk, read on the host: the ext4 filesystem Ignition made, with the file
    # the check unit wrote through the generated mount unit
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(data)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert label == "ibdata"
    marker = subprocess.run(["debugfs", "-R", "cat /marker", str(data)], capture_output=True, text=True,
                            check=True).stdout
    assert marker == "written on first boot\n"
