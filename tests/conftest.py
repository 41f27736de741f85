"""Shared fixtures and capability checks.

Markers (see pyproject.toml): ``root``, ``qemu``, ``network``, ``slow``. A test with
a marker whose capability is missing here is skipped with the reason; in CI on the
project machine all capabilities exist, so everything runs.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMAGEBUILDER_SHARED", REPO.parent / "shared"))
SHARED_FIXTURES = SHARED / "fixtures" / "coreos-installer"


@functools.cache
def have_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None


@functools.cache
def have_network() -> bool:
    """Can we reach the host's configured Debian mirror (what mmdebstrap uses)?"""
    hosts: list[tuple[str, int]] = []
    for f in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?:^|\s)(https?://\S+)", text):
            url = urlparse(m.group(1))
            if url.hostname:
                hosts.append((url.hostname, url.port or (443 if url.scheme == "https" else 80)))
    for host, port in dict.fromkeys(hosts):
        try:
            with socket.create_connection((host, port), timeout=5):
                return True
        except OSError:
            continue
    return False


def pytest_collection_modifyitems(config, items):
    checks = {
        "root": (have_root, "needs root"),
        "qemu": (have_qemu, "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"),
        "network": (have_network, "needs the Debian package mirror (no network here)"),
    }
    skip_slow = os.environ.get("IMAGEBUILDER_SKIP_SLOW") == "1"
    for item in items:
        for name, (probe, reason) in checks.items():
            if item.get_closest_marker(name) and not probe():
                item.add_marker(pytest.mark.skip(reason=reason))
        if skip_slow and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.skip(reason="IMAGEBUILDER_SKIP_SLOW=1"))


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def run_cli(*args: str, input: bytes | None = None, cwd: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (the way users do), returning bytes output."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "imagebuilder", *args], input=input,
                          capture_output=True, cwd=cwd, env=e)


@pytest.fixture
def cli():
    return run_cli
