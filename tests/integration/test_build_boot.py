"""End to end: ``imagebuilder build`` the bundled definitions, boot them (BIOS and UEFI).

- tiny (fixtures/images/tiny.yaml): busybox + the host kernel; its /sbin/init prints the
  ``imagebuilder-check NAME ok|fail`` lines and powers off. Also checked: two builds
  from empty caches give the same OSTree commit and the same partition table.
- debian (fixtures/images/debian.yaml): mmdebstrap bookworm, ~5 min the first time; the
  cache (``IMAGEBUILDER_TEST_CACHE``, default ~/.cache/imagebuilder) makes reruns fast.
  Booted once as defined (login prompt) and once with ``imagebuilder.selftest=1``
  (the self-check unit prints the same lines and powers off).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagebuilder.boot.qemu import boot

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "fixtures/images/tiny.yaml"
DEBIAN = REPO / "fixtures/images/debian.yaml"
MKTINYOS = REPO / "fixtures/tinyos/mktinyos"
CHECKS = ("ostree-booted", "usr-readonly", "usr-ro-mount", "etc-writable", "var-writable",
          "var-mounted", "cmdline")
DONE = r"imagebuilder-check-done (ok|fail)"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def build(definition: Path, out: Path, cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(definition),
                           "-o", str(out), "--cache", str(cache), "-f", "-q"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"build failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads((out / "meta.json").read_text())


def image_of(out: Path, meta: dict) -> Path:
    [raw] = [a for a in meta["artifacts"] if a["format"] == "raw"]
    return out / raw["name"]


def check_lines(console: str) -> dict[str, str]:
    return dict(re.findall(r"imagebuilder-check (\S+) (ok|fail)", console))


def assert_all_checks_ok(console: str, *, kargs: tuple[str, ...] = ()) -> None:
    found = check_lines(console)
    missing = [c for c in CHECKS if c not in found]
    failed = {k: v for k, v in found.items() if v != "ok"}
    assert not missing and not failed, f"missing {missing}, failed {failed}\n{console[-3000:]}"
    assert "imagebuilder-check-done ok" in console
    cmdline = re.search(r"imagebuilder-cmdline (.*)", console)
    assert cmdline, console[-2000:]
    for k in kargs:
        assert k in cmdline.group(1).split(), cmdline.group(1)


def boot_and_check(image: Path, *, uefi: bool, log: Path, timeout: float,
                   kargs: tuple[str, ...] = ()) -> str:
    res = boot(image, uefi=uefi, expect=DONE, timeout=timeout, snapshot=True, log_path=log)
    assert res.matched, f"{res.reason} after {res.duration:.0f} s\n{res.output[-3000:]}"
    assert_all_checks_ok(res.output, kargs=kargs)
    return res.output


# ------------------------------------------------------------------------------ tiny


@pytest.fixture(scope="module")
def tiny_rootfs() -> Path:
    """fixtures/tinyos/mktinyos out/tinyos — the directory tiny.yaml's source points at."""
    out = REPO / "out/tinyos"
    subprocess.run([sys.executable, str(MKTINYOS), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_rootfs) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("tiny")
    meta = build(TINY, base / "out", base / "cache")
    return image_of(base / "out", meta), meta


def test_tiny_build_records(tiny) -> None:
    image, meta = tiny
    assert image.stat().st_size == 1 << 30
    assert meta["ostree"]["ref"] == "tinyos/x86_64/base" and len(meta["ostree"]["commit"]) == 64
    assert "$ignition_firstboot" in meta["kernel_args"]


def test_tiny_is_reproducible(tiny, tmp_path: Path, tiny_rootfs: Path) -> None:
    """Rebuilt from scratch (fresh cache, regenerated rootfs): same commit, same GPT."""
    image, meta = tiny
    subprocess.run([sys.executable, str(MKTINYOS), str(tiny_rootfs)], check=True, capture_output=True)
    meta2 = build(TINY, tmp_path / "out", tmp_path / "cache")
    image2 = image_of(tmp_path / "out", meta2)
    assert meta2["ostree"]["commit"] == meta["ostree"]["commit"]
    assert meta2["partition_table"] == meta["partition_table"]
    sector = 512
    with open(image, "rb") as a, open(image2, "rb") as b:
        assert a.read(34 * sector) == b.read(34 * sector)  # protective MBR + primary GPT
        a.seek(-33 * sector, os.SEEK_END)
        b.seek(-33 * sector, os.SEEK_END)
        assert a.read() == b.read()  # backup GPT


@pytest.mark.qemu
@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_tiny_boots(tiny, uefi: bool, tmp_path: Path) -> None:
    image, _ = tiny
    console = boot_and_check(image, uefi=uefi, log=tmp_path / "console.log", timeout=420)
    assert "imagebuilder-os imagebuilder tiny OS 1" in console


# ------------------------------------------------------------------------------ debian


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagebuilder"
    return Path(os.environ.get("IMAGEBUILDER_TEST_CACHE", default))


@pytest.fixture(scope="module")
def debian_selftest(tmp_path_factory) -> tuple[Path, dict]:
    """debian.yaml plus imagebuilder.selftest=1 (tree and commit come from the same cache)."""
    base = tmp_path_factory.mktemp("debian")
    d = yaml.safe_load(DEBIAN.read_text())
    d["kernel_args"] = [*d.get("kernel_args", []), "imagebuilder.selftest=1"]
    definition = base / "debian-selftest.yaml"
    definition.write_text(yaml.safe_dump(d))
    meta = build(definition, base / "out", _cache())
    return image_of(base / "out", meta), meta


@pytest.mark.network
@pytest.mark.qemu
@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_debian_selftest_boots(debian_selftest, uefi: bool, tmp_path: Path) -> None:
    image, meta = debian_selftest
    assert meta["ostree"]["ref"] == "debian/x86_64/base"
    console = boot_and_check(image, uefi=uefi, log=tmp_path / "console.log", timeout=900,
                             kargs=("imagebuilder.selftest=1",))
    assert "imagebuilder-os Debian GNU/Linux 12 (bookworm)" in console


@pytest.mark.network
@pytest.mark.qemu
def test_debian_boots_to_login_prompt(tmp_path_factory, tmp_path: Path) -> None:
    base = tmp_path_factory.mktemp("debian-plain")
    meta = build(DEBIAN, base / "out", _cache())
    res = boot(image_of(base / "out", meta), expect=r"login: ", timeout=900, snapshot=True,
               log_path=tmp_path / "console.log")
    assert res.matched, f"{res.reason}\n{res.output[-3000:]}"
    assert "imagebuilder-check" not in res.output  # the self-check stays off without the karg
