"""The tiny OS converted to qcow2, vmdk, vhd and vhdx boots under QEMU (TCG) from each,
with every check line of its /sbin/init ok.

The boot runner picks the disk format with ``qemu-img info``, which cannot tell a fixed
VHD from a raw disk (the footer is at the end); the VHD is therefore booted through a
qcow2 overlay whose backing file is the VHD read with QEMU's ``vpc`` driver, so the guest
sees exactly the VHD's virtual disk.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuilder import formats
from imagebuilder.boot.qemu import boot

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DONE = r"imagebuilder-check-done (ok|fail)"
CHECKS = ("ostree-booted", "usr-readonly", "etc-writable", "var-writable", "cmdline")


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "out"
    proc = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(REPO / "fixtures/images/tiny.yaml"),
                           "-o", str(out), "-f", "-q"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    [raw] = [a for a in meta["artifacts"] if a["format"] == "raw"]
    return out / raw["name"]


@pytest.mark.parametrize("fmt,uefi", [("qcow2", False), ("vmdk", False), ("vhd", True), ("vhdx", False)])
def test_tiny_boots_from_format(tiny_raw, tmp_path, fmt, uefi):
    art = formats.convert(fmt, tiny_raw, tmp_path / formats.file_name("tiny", fmt), seed="tiny",
                          epoch=1700000000, name="tiny")
    image = art.path
    if fmt == "vhd":
        image = tmp_path / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "vpc", "-b", str(art.path), str(image)],
                       check=True)
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                         check=True, capture_output=True).stdout)
        assert info["virtual-size"] == tiny_raw.stat().st_size
    res = boot(image, uefi=uefi, expect=DONE, timeout=420, snapshot=True, log_path=tmp_path / "console.log")
    assert res.matched, f"{fmt}: {res.reason} after {res.duration:.0f} s\n{res.output[-3000:]}"
    found = dict(re.findall(r"imagebuilder-check (\S+) (ok|fail)", res.output))
    bad = {c: found.get(c) for c in CHECKS if found.get(c) != "ok"}
    assert not bad and "imagebuilder-check-done ok" in res.output, f"{fmt}: {bad}\n{res.output[-3000:]}"
