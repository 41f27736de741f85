"""customize-image's libguestfs path: a streamOptimized vmdk (QEMU cannot write those in
place) is changed in a copy by the appliance and atomically replaces the original."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_image_customize import DEMO, make_disk  # noqa: E402

from imagebuilder.image.customize import customize_image, load_customization  # noqa: E402
from imagebuilder.image.inspect import inspect_image  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-utils")]


def test_stream_optimized_vmdk_via_libguestfs(tmp_path):
    pytest.importorskip("guestfs")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    raw = make_disk(tmp_path)
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(vmdk)], check=True)
    rep = customize_image(vmdk, load_customization(ignition=str(DEMO), karg_append=["v=1"]))
    assert rep.backend == "libguestfs (vmdk)"
    got = inspect_image(vmdk)
    assert got["format"] == "vmdk"
    assert got["boot"]["ignition_config"]["size"] == len(DEMO.read_bytes())
    assert "v=1" in got["boot"]["entries"][0]["options"].split()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".disk.vmdk")]
