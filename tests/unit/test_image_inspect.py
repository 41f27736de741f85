"""inspect on synthetic FCOS-layout images: partitions, superblocks (checked against
blkid), BLS kernel arguments, OSTree deployment from the root fs, Ignition state."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from imagebuilder.cli.main import main
from imagebuilder.image.customize import customize_image, load_customization
from imagebuilder.image.disk import probe_fs
from imagebuilder.image.inspect import inspect_image, render_text
from test_image_customize import COMMIT, CSUM, DEMO, make_disk

pytestmark = pytest.mark.skipif(shutil.which("debugfs") is None, reason="needs e2fsprogs")


def test_inspect_raw(tmp_path):
    img = make_disk(tmp_path)
    rep = inspect_image(img)
    parts = {p["name"]: p for p in rep["partition_table"]["partitions"]}
    assert parts["boot"]["filesystem"] == {"type": "ext4", "label": "boot",
                                           "uuid": "11111111-1111-4111-8111-111111111111"}
    assert parts["root"]["filesystem"]["label"] == "root"
    assert parts["root"]["type"] == "Linux root (x86-64)"
    if shutil.which("blkid"):
        out = subprocess.run(["blkid", "-p", "-O", str(parts["boot"]["offset"]), "-o", "export", str(img)],
                             capture_output=True, text=True).stdout
        assert "UUID=11111111-1111-4111-8111-111111111111" in out and "LABEL=boot" in out
    (entry,) = rep["boot"]["entries"]
    assert entry["ostree"] == f"/ostree/boot.1/debian/{CSUM}/0"
    assert entry["platform"] == "metal" and entry["firstboot_literal"] is True
    assert rep["boot"]["firstboot_stamp"] is True and rep["boot"]["ignition_config"] is None
    assert rep["boot"]["grub_cfg"]["generated_by_imagebuilder"] is True
    (dep,) = rep["deployments"]
    assert dep["osname"] == "debian" and dep["commit"] == COMMIT and dep["version"] == "12.0.1"
    text = render_text(rep)
    assert "embedded Ignition config: absent" in text and "firstboot stamp: present" in text


def test_inspect_after_customize_and_cli_json(tmp_path, capsys):
    img = make_disk(tmp_path)
    customize_image(img, load_customization(ignition=str(DEMO), platform="qemu"))
    assert main(["inspect", str(img), "--json"]) in (0, None)
    rep = json.loads(capsys.readouterr().out)
    ic = rep["boot"]["ignition_config"]
    assert ic["size"] == len(DEMO.read_bytes()) and ic["version"] == "3.3.0"
    assert rep["boot"]["entries"][0]["platform"] == "qemu"


def test_probe_fs_kinds():
    assert probe_fs(b"\0" * 4096).type is None
    head = bytearray(4096)
    head[:4] = b"XFSB"
    head[108:112] = b"root"
    assert probe_fs(bytes(head)).type == "xfs" and probe_fs(bytes(head)).label == "root"
