"""The chroot helper's API mounts: made only inside the tree, always undone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ostree.chroot import api_mounts, chroot_run

pytestmark = pytest.mark.root


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for d in ("usr/bin", "proc", "sys", "dev", "tmp"):
        (tree / d).mkdir(parents=True)
    return tree


def test_mounted_inside_and_unmounted_after_error(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    with pytest.raises(RuntimeError):
        with api_mounts(tree):
            assert os.path.ismount(tree / "proc") and os.path.ismount(tree / "sys")
            assert os.path.ismount(tree / "dev") and (tree / "dev/null").exists()
            raise RuntimeError("stage failed half way")
    for d in ("proc", "sys", "dev"):
        assert not os.path.ismount(tree / d), d
    assert list((tree / "dev").iterdir()) == []


def test_symlinked_api_dir_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree / "proc").rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "proc").symlink_to(outside)
    with pytest.raises(InvalidConfigError, match="symlink"):
        with api_mounts(tree):
            pass
    assert not os.path.ismount(outside)
    assert not any(os.path.ismount(tree / d) for d in ("sys", "dev"))


def test_chroot_run_uses_a_clean_environment(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    # a static busybox is enough of a root filesystem to run env in
    bb = Path("/usr/bin/busybox").read_bytes() if Path("/usr/bin/busybox").exists() else None
    if bb is None:
        pytest.skip("busybox-static not installed")
    (tree / "usr/bin/busybox").write_bytes(bb)
    os.chmod(tree / "usr/bin/busybox", 0o755)
    for applet in ("env", "sh"):
        (tree / "usr/bin" / applet).symlink_to("busybox")
    os.environ["IMAGEBUILDER_LEAK_TEST"] = "leaked"
    try:
        chroot_run(tree, ["sh", "-c", "env > /tmp/env.txt"], env={"EXTRA": "1"})
    finally:
        del os.environ["IMAGEBUILDER_LEAK_TEST"]
    env = (tree / "tmp/env.txt").read_text()
    assert "EXTRA=1" in env and "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in env
    assert "IMAGEBUILDER_LEAK_TEST" not in env
    assert not os.path.ismount(tree / "proc")
