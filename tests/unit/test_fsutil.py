"""fsutil: the one copy primitive, temp files (locked, swept when their owner died),
file locks and the one output check."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from imagebuilder import fsutil
from imagebuilder.errors import UserInputError


def _no_reflink(monkeypatch):
    def refuse(*a):
        raise OSError(errno.EOPNOTSUPP, "no reflinks here")
    monkeypatch.setattr(fsutil, "_reflink", refuse)


def _sparse_file(path, size=8 << 20) -> bytes:
    """A file with data at 0, 3 MiB and at the end, holes between."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in ((0, b"A" * 5000), (3 << 20, os.urandom(70_000)), (size - 10, b"Z" * 10)):
            f.seek(off)
            f.write(data)
    return path.read_bytes()


@pytest.mark.parametrize("fail", [None, "EXDEV", "EINVAL", "midway"])
def test_copy_file_methods_give_the_same_bytes(tmp_path, monkeypatch, fail):
    _no_reflink(monkeypatch)
    monkeypatch.setattr(fsutil, "COPY_CHUNK", 4096)
    src = tmp_path / "src"
    data = _sparse_file(src)
    calls = []
    real = os.copy_file_range

    def cfr(*a):
        calls.append(a[2])
        if fail == "midway" and len(calls) > 3 or fail not in (None, "midway"):
            raise OSError(getattr(errno, fail if fail != "midway" else "EXDEV"), "refused")
        return real(*a)

    monkeypatch.setattr(fsutil.os, "copy_file_range", cfr)
    method = fsutil.copy_file(src, tmp_path / "dst", writeback=True)
    assert (tmp_path / "dst").read_bytes() == data
    assert method == ("copy_file_range" if fail is None else "readwrite")
    assert len(calls) >= (1 if fail in ("EXDEV", "EINVAL") else 4)


def test_copy_file_keeps_holes_and_copies_ranges(tmp_path, monkeypatch):
    _no_reflink(monkeypatch)
    src = tmp_path / "src"
    data = _sparse_file(src)
    fsutil.copy_file(src, tmp_path / "dst")
    st = os.stat(tmp_path / "dst")
    assert st.st_size == len(data) and st.st_blocks * 512 < len(data) // 2  # holes stayed holes
    # a range into an existing file at another offset: sparse skips the source's holes
    # (for a new, zeroed destination); sparse=False overwrites them with zeros
    for sparse in (True, False):
        dst = tmp_path / f"big-{sparse}"
        dst.write_bytes(b"\xee" * 100)
        with open(src, "rb") as s, open(dst, "r+b") as d:
            fsutil.copy_file(s, d, src_offset=(3 << 20) - 10, length=20_000, dst_offset=50,
                             sparse=sparse)
        out = dst.read_bytes()
        want = data[(3 << 20) - 10:(3 << 20) + 19_990]
        assert out[:50] == b"\xee" * 50 and out[60:] == want[10:]
        assert out[50:60] == (b"\xee" * 10 if sparse else b"\0" * 10)
    with pytest.raises(OSError, match="runs past the end"):
        fsutil.copy_file(src, dst, src_offset=len(data) - 5, length=10)


def test_copy_file_errors_and_cancel(tmp_path, monkeypatch):
    _no_reflink(monkeypatch)
    monkeypatch.setattr(fsutil, "COPY_CHUNK", 4096)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(100_000))

    def enospc(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "copy_file_range", enospc)
    with pytest.raises(OSError, match="No space left"):
        fsutil.copy_file(src, tmp_path / "dst")
    monkeypatch.undo()
    _no_reflink(monkeypatch)
    monkeypatch.setattr(fsutil, "COPY_CHUNK", 4096)
    n = []
    with pytest.raises(fsutil.CopyCancelled):
        fsutil.copy_file(src, tmp_path / "dst2", cancelled=lambda: n.append(1) or len(n) > 3)


def test_check_output_target_one_wording(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(UserInputError, match="f: file exists") as ei:
        fsutil.check_output_target(tmp_path / "f")
    assert ei.value.hint == "use --force (-f) to overwrite"
    with pytest.raises(UserInputError, match="is a directory") as ei:
        fsutil.check_output_target(tmp_path, force=True)
    assert "output file's name" in ei.value.hint
    with pytest.raises(UserInputError, match="output directory does not exist"):
        fsutil.check_output_target(tmp_path / "nope" / "x")
    assert fsutil.check_output_target(tmp_path / "f", force=True) == tmp_path


def test_read_input_messages(tmp_path):
    with pytest.raises(UserInputError, match="is a directory, expected an Ignition config"):
        fsutil.read_input(tmp_path, "Ignition config")
    with pytest.raises(UserInputError, match="is a directory, expected a keyfile"):
        fsutil.read_input(tmp_path, "keyfile")
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(UserInputError, match="larger than the limit of 100 bytes"):
        fsutil.read_input(tmp_path / "big", "keyfile", limit=100)


def test_temp_files_are_locked_and_swept_when_their_owner_died(tmp_path):
    dest = tmp_path / "out.iso"
    # a writer killed by SIGKILL leaves its temp file behind
    code = ("import sys, time; from imagebuilder import fsutil; "
            "fd, p = fsutil.make_temp(sys.argv[1]); print(p, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE,
                            text=True)
    stale = proc.stdout.readline().strip()
    assert os.path.exists(stale)
    # while its owner lives, nobody removes it
    fd, mine = fsutil.make_temp(dest)
    assert os.path.exists(stale)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.close(fd)
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_bytes(b"")
    removed = fsutil.sweep_stale_temps(tmp_path)
    assert [str(p) for p in removed] == [stale]
    assert mine.exists() and unrelated.exists()  # our own (live pid) and other files stay


def test_lock_waits_for_the_other_holder(tmp_path):
    f = tmp_path / "img"
    f.write_bytes(b"x")
    code = ("import fcntl, sys, time; fd = open(sys.argv[1], 'rb'); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(0.6)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(f)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    said = []
    fd = os.open(f, os.O_RDONLY)
    try:
        t = time.monotonic()
        fsutil.lock_fd(fd, f, notify=said.append)
        assert time.monotonic() - t > 0.2
        assert said == [f"waiting for another process to finish with {f} ..."]
    finally:
        os.close(fd)
        proc.wait()
    fd = os.open(f, os.O_RDONLY)
    fd2 = os.open(f, os.O_RDONLY)
    try:
        fsutil.lock_fd(fd, f)
        with pytest.raises(UserInputError, match="still locked by another process"):
            fsutil.lock_fd(fd2, f, timeout=0.1)
    finally:
        os.close(fd)
        os.close(fd2)
