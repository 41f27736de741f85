"""The Containerfile really builds (buildah, no registry) and the image runs imagebuilder."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.network]

IMAGE = "localhost/imagebuilder:latest"  # the tag packaging/build-container.sh builds
B = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def image():
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    subprocess.run(["bash", "packaging/build-container.sh"], cwd=REPO, check=True,
                   env={"IMAGEBUILDER_IMAGE": IMAGE, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    ctr = subprocess.run([*B, "from", "--pull-never", IMAGE], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        yield ctr
    finally:
        subprocess.run([*B, "rm", ctr], capture_output=True)


def run_in(ctr: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*B, "run", "--isolation", "chroot", ctr, "--", *argv],
                          capture_output=True, text=True)


def test_container_help(image):
    r = run_in(image, "imagebuilder", "--help")
    assert r.returncode == 0, r.stderr
    assert "ignition" in r.stdout and "iso" in r.stdout


def test_container_real_command(image):
    subprocess.run([*B, "copy", image, str(REPO / "fixtures/ignition/example.ign"), "/work/example.ign"],
                   check=True, capture_output=True)
    r = run_in(image, "imagebuilder", "ignition", "validate", "/work/example.ign")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_in(image, "imagebuilder", "ignition", "show", "/work/example.ign")
    assert r.returncode == 0, r.stderr
    assert "/etc/hostname" in r.stdout and "imagebuilder-demo" in r.stdout
    # the system tools the package list promises are inside the image
    r = run_in(image, "sh", "-c", "command -v xorriso ostree qemu-img mkfs.ext4 sgdisk ignition-validate")
    assert r.returncode == 0, r.stdout + r.stderr
