"""Object store: atomic commits, faithful copies, locking, stale workspace cleanup."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from imagebuilder.pipeline.store import Store, tree_usage

OID = "a" * 64


def make_tree(root: Path) -> Path:
    t = root / "src"
    (t / "etc").mkdir(parents=True)
    (t / "etc" / "file").write_text("hello\n")
    os.link(t / "etc" / "file", t / "etc" / "hardlink")
    os.symlink("/etc/file", t / "abs-link")
    (t / "suid").write_text("#!/bin/sh\n")
    os.chmod(t / "suid", 0o4755)
    os.setxattr(t / "etc" / "file", "user.test", b"value")
    if os.geteuid() == 0:
        os.chown(t / "etc" / "file", 123, 456)
    with open(t / "sparse", "wb") as f:
        f.truncate(64 << 20)
    return t


def test_commit_and_restore_preserve_everything(tmp_path):
    store = Store(tmp_path / "cache")
    src = make_tree(tmp_path)
    assert not store.contains(OID)
    assert store.commit(OID, src, meta={"type": "t"}) is True
    assert store.contains(OID) and store.object_ids() == [OID]
    assert src.exists()  # copied, not moved
    dest = tmp_path / "restored"
    store.restore(OID, dest)
    for tree in (store.object_tree(OID), dest):
        st = os.stat(tree / "etc" / "file")
        assert st.st_ino == os.stat(tree / "etc" / "hardlink").st_ino
        assert os.readlink(tree / "abs-link") == "/etc/file"
        assert os.stat(tree / "suid").st_mode & 0o7777 == 0o4755
        assert os.getxattr(tree / "etc" / "file", "user.test") == b"value"
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (123, 456)
        assert os.stat(tree / "sparse").st_blocks == 0  # holes stay holes
    assert tree_usage(store.object_tree(OID)) < (1 << 20)
    assert not list((store.root / "tmp").iterdir())


def test_commit_move_and_idempotence(tmp_path):
    store = Store(tmp_path / "cache")
    src = make_tree(tmp_path)
    assert store.commit(OID, src, move=True) is True
    assert not src.exists() and (store.object_tree(OID) / "etc" / "file").is_file()
    other = make_tree(tmp_path)
    (other / "extra").write_text("x")
    assert store.commit(OID, other, move=True) is False  # first writer wins, objects are immutable
    assert other.exists() and not (store.object_tree(OID) / "extra").exists()


def test_failed_commit_leaves_no_object(tmp_path):
    store = Store(tmp_path / "cache")
    with pytest.raises(Exception):
        store.commit(OID, tmp_path / "does-not-exist")
    assert not store.contains(OID)
    assert not (store.root / "objects" / OID).exists()
    assert not list((store.root / "tmp").iterdir())


def test_stale_workspaces_are_cleaned_live_ones_kept(tmp_path):
    store = Store(tmp_path / "cache")
    tmp = store.root / "tmp"
    (tmp / "build-old").mkdir()
    (tmp / "build-old" / "junk").write_text("x")
    (tmp / "build-old.lock").touch()  # nobody holds it: its build was killed
    Store(tmp_path / "cache")
    assert not (tmp / "build-old").exists() and not (tmp / "build-old.lock").exists()
    with store.tempdir("build") as live:
        (live / "f").write_text("x")
        (tmp / "build-dead").mkdir()
        (tmp / "build-dead.lock").touch()
        assert store.cleanup_stale() == ["build-dead"]  # flock conflicts like another process's
        assert live.is_dir() and (live / "f").is_file()
        assert not (tmp / "build-dead").exists()
        Store(tmp_path / "cache")  # opening the store cleans up too, and keeps live workspaces
        assert live.is_dir()
    assert not live.exists()
    assert not list(tmp.iterdir())


def test_object_lock_is_exclusive(tmp_path):
    store = Store(tmp_path / "cache")
    with store.lock(OID):
        fd = os.open(store.root / "locks" / f"{OID}.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


@pytest.mark.parametrize("layout", ["hole-data-hole", "data-only", "hole-only", "data-hole-data"])
def test_artifact_copy_keeps_holes_and_hashes_content(tmp_path, layout):
    import hashlib

    from imagebuilder.pipeline.engine import copy_and_hash

    src = tmp_path / "disk.raw"
    size = 24 << 20
    with open(src, "wb") as f:
        f.truncate(size)
        if layout in ("hole-data-hole", "data-hole-data"):
            f.seek(8 << 20)
            f.write(os.urandom(3 << 20) if layout == "hole-data-hole" else b"")
        if layout in ("data-only",):
            f.seek(0)
            f.write(os.urandom(size))
        if layout == "data-hole-data":
            f.seek(0)
            f.write(b"head" * 1024)
            f.seek(size - 4096)
            f.write(b"tail" * 1024)
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out.raw"
    n, digest = copy_and_hash(src, dest)
    assert (n, digest) == (size, expected)
    assert dest.read_bytes() == src.read_bytes()
    assert os.stat(dest).st_blocks <= os.stat(src).st_blocks + 16  # holes stay holes
    dest.unlink()
    assert copy_and_hash(src, dest, want_hash=False) == (size, None)
    assert dest.read_bytes() == src.read_bytes()
