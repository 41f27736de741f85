"""Run a program inside a root filesystem tree with /dev, /proc and /sys mounted.

The API mounts are made only on real directories inside the tree (a symlink such as
``proc -> /somewhere`` would otherwise redirect a mount onto the host), and they are
always unmounted again, in reverse order, even when the program fails or we are
interrupted. A mount that stays busy is detached lazily so the tree can be removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import InvalidConfigError, ToolError
from ..run import run

log = logging.getLogger("imagebuilder.ostree.chroot")

# (directory in the tree, mount argv without the target)
API_MOUNTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("proc", ("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc")),
    ("sys", ("mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec,ro", "sysfs")),
    ("dev", ("mount", "--bind", "/dev")),
)

# A clean environment for programs in the chroot: nothing from the host leaks in
# except what makes the build reproducible.
BASE_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
    "TMPDIR": "/tmp",
}


def _mount_target(tree: Path, name: str) -> Path:
    """tree/name as a real directory inside the tree (created if missing)."""
    target = tree / name
    if target.is_symlink():
        raise InvalidConfigError(f"{target}: is a symlink; refusing to mount over it")
    target.mkdir(mode=0o755, exist_ok=True)
    real = target.resolve()
    if real.parent != tree.resolve():
        raise InvalidConfigError(f"{target}: resolves outside the tree ({real})")
    return real


def _is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def _umount(target: Path) -> None:
    if not _is_mountpoint(target):
        return
    try:
        run(["umount", target])
    except ToolError as e:
        log.warning("umount %s failed (%s); detaching lazily", target, e)
        run(["umount", "--lazy", target], check=False)


@contextlib.contextmanager
def api_mounts(tree: Path) -> Iterator[Path]:
    """Mount proc, sysfs and a bind of /dev into ``tree``; always unmount them."""
    tree = tree.resolve()
    mounted: list[Path] = []
    try:
        for name, argv in API_MOUNTS:
            target = _mount_target(tree, name)
            if _is_mountpoint(target):
                raise InvalidConfigError(f"{target}: already a mount point")
            run([*argv, target])
            mounted.append(target)
        yield tree
    finally:
        for target in reversed(mounted):
            _umount(target)


def chroot_run(tree: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               capture: bool = True) -> None:
    """Run ``argv`` chrooted into ``tree`` with the API filesystems mounted."""
    full_env = dict(BASE_ENV)
    if "SOURCE_DATE_EPOCH" in os.environ:
        full_env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    if env:
        full_env.update(env)
    with api_mounts(tree) as root:
        # env -i: start from an empty environment, then exactly full_env
        run(["chroot", root, "/usr/bin/env", "-i",
             *(f"{k}={v}" for k, v in sorted(full_env.items())), *argv], capture=capture)
