"""Fault injection: SIGKILL and SIGTERM at random points of ISO ``-o``, in-place edits and
``pxe customize``. After each kill the input is intact, the output absent or complete;
SIGTERM leaves no temp file, and the next run removes what a SIGKILL left."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bombs
import liveiso_helpers as live

pytestmark = pytest.mark.slow
CONFIG = b'{"ignition":{"version":"3.3.0"}}\n'
ROUNDS = 10


def sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def run(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "imagebuilder", *map(str, args)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r


def killed(args: list, delay: float, sig: int) -> int | None:
    """Run the CLI, send sig after delay; its exit status (None: it finished before)."""
    p = subprocess.Popen([sys.executable, "-m", "imagebuilder", *map(str, args)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    if p.poll() is not None:
        p.communicate()
        return None
    p.send_signal(sig)
    _, err = p.communicate()
    if sig == signal.SIGTERM:  # (-15: it came before the handler was set up, nothing done yet)
        assert p.returncode in (143, 0, -signal.SIGTERM), err.decode()
    return p.returncode


def duration(args: list) -> float:
    t = time.monotonic()
    run(*args)
    return time.monotonic() - t


@pytest.fixture(scope="module")
def big_iso() -> Path:
    return live.build(pad_mib=256)


def test_kill_during_iso_output(big_iso, tmp_path):
    (tmp_path / "c.ign").write_bytes(CONFIG)
    out = tmp_path / "out" / "o.iso"
    out.parent.mkdir()
    args = ["iso", "ignition", "embed", "-f", "-i", tmp_path / "c.ign", "-o", out, big_iso]
    src_sha = sha(big_iso)
    took = duration(args)
    want = sha(out)
    rnd = random.Random(11)
    hits = 0
    for i in range(ROUNDS):
        out.unlink(missing_ok=True)
        before = temps(out.parent)
        sig = signal.SIGTERM if i % 2 else signal.SIGKILL
        rc = killed(args, rnd.uniform(0.05, 0.9 * took), sig)
        hits += rc is not None
        assert not out.exists() or sha(out) == want
        if sig == signal.SIGTERM:  # nothing new left behind
            assert set(temps(out.parent)) <= set(before)
    assert sha(big_iso) == src_sha
    assert hits >= ROUNDS // 2
    out.unlink(missing_ok=True)
    run(*args)  # the next run sweeps what SIGKILL left
    assert temps(out.parent) == [] and sha(out) == want


def test_kill_during_in_place_edits(tmp_path):
    pristine = live.build()
    iso = tmp_path / "live.iso"
    shutil.copyfile(pristine, iso)
    (tmp_path / "c.ign").write_bytes(CONFIG)
    args = ["iso", "customize", "-f", "--live-ignition", tmp_path / "c.ign",
            "--live-karg-append", "ib.fault=1", iso]
    took = duration(args)
    new = sha(iso)
    run("iso", "reset", iso)
    old = sha(iso)
    assert old == sha(pristine)
    rnd = random.Random(7)
    for i in range(ROUNDS * 2):
        sig = signal.SIGTERM if i % 2 else signal.SIGKILL
        killed(args, rnd.uniform(0.0, took), sig)
        now = sha(iso)
        if sig == signal.SIGTERM:
            assert now in (old, new)
        elif now not in (old, new):  # a SIGKILL inside a write: repairable from metadata
            r = subprocess.run([sys.executable, "-m", "imagebuilder", "iso", "inspect", "--json",
                                iso], capture_output=True)
            assert r.returncode == 0 and b'"problem"' in r.stdout
        run("iso", "reset", iso)
        assert sha(iso) == old
    assert temps(tmp_path) == []


def test_kill_during_pxe_customize(tmp_path):
    stamp = bombs.newc_header("etc/coreos-live-initramfs", 0)
    size = 200 << 20
    initrd = tmp_path / "initrd.img"
    with open(initrd, "wb") as f:
        f.write(stamp + bombs.newc_header("usr/lib/big", size))
        block = hashlib.shake_256(b"pxe").digest(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
        f.write(bombs.trailer())
    (tmp_path / "c.ign").write_bytes(CONFIG)
    out = tmp_path / "out" / "pxe.img"
    out.parent.mkdir()
    args = ["pxe", "customize", "-f", "--live-ignition", tmp_path / "c.ign", "-o", out, initrd]
    src_sha = sha(initrd)
    took = duration(args)
    want = sha(out)
    rnd = random.Random(3)
    for i in range(ROUNDS):
        out.unlink(missing_ok=True)
        before = temps(out.parent)
        sig = signal.SIGTERM if i % 2 else signal.SIGKILL
        killed(args, rnd.uniform(0.05, 0.9 * took), sig)
        assert not out.exists() or sha(out) == want
        if sig == signal.SIGTERM:
            assert set(temps(out.parent)) <= set(before)
    assert sha(initrd) == src_sha
    out.unlink(missing_ok=True)
    run(*args)
    assert temps(out.parent) == [] and sha(out) == want
