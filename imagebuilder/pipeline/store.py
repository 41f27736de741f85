"""The content-addressed object store (the build cache).

Layout of ``--cache DIR`` (default ``$XDG_CACHE_HOME/imagebuilder`` or ``~/.cache/imagebuilder``)::

    objects/<stage id>/tree/          the tree after that stage (a plain directory)
    objects/<stage id>/object.json    stage type, pipeline, size, creation time
    locks/<stage id>.lock             flock: exclusive while committing, shared while reading
    tmp/<name>/ + tmp/<name>.lock     build workspaces and half-written objects (flock-held)
    logs/                             logs of failed builds

Trees are stored as directories (not tarballs) so a cached pipeline result is used in
place as a read-only input, and restoring a prefix is one ``cp -a --reflink=auto``
(owners, modes, xattrs, hard links, sparse files preserved; instant on btrfs/xfs).

Atomicity: an object is assembled under ``tmp/`` and renamed into ``objects/`` while its
lock is held exclusively; a build killed at any point leaves at most a ``tmp/`` entry,
which the next store user removes once no process holds its lock. Objects are immutable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InternalError, ToolError, UserInputError
from ..run import run


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "imagebuilder"


def copy_tree(src: Path, dest: Path) -> None:
    """Copy the directory src to dest (which must not exist), preserving everything."""
    run(["cp", "-a", "--reflink=auto", "--no-target-directory", os.fspath(src), os.fspath(dest)])


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (deepest first), from /proc/self/mountinfo."""
    base = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                mp = _unescape_mountinfo(fields[4])
                if mp == base or mp.startswith(base.rstrip("/") + "/"):
                    found.append(mp)
    except OSError:
        return []
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_under(path: Path) -> list[str]:
    """Detach every mount below path (a killed stage may leave /proc or a /dev bind behind)."""
    found = mounts_under(path)
    for mp in found:
        run(["umount", "--lazy", mp], check=False)
    return found


def rmtree(path: Path) -> None:
    """Remove a tree even if a stage left read-only directories or mounts in it.

    Mounts are detached first and the removal refuses to run while any remain, so a
    leftover bind mount (e.g. of /dev) can never make us delete host files.
    """
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path) and mounts_under(path):
        unmount_under(path)
        left = mounts_under(path)
        if left:
            raise InternalError(f"refusing to remove {path}: still mounted: {', '.join(left)}",
                                hint="unmount them (umount -l) and retry")

    def onerror(func, p, exc_info):
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=onerror)
    else:
        os.unlink(path)


def tree_usage(path: Path) -> int:
    """Bytes allocated by a tree, counting hard-linked inodes once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        try:
            for sub in ("objects", "locks", "tmp", "logs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"{self.root}: cannot use as cache: {e.strerror}") from None
        self.cleanup_stale()

    # -- paths
    def object_dir(self, oid: str) -> Path:
        return self.root / "objects" / oid

    def object_tree(self, oid: str) -> Path:
        return self.object_dir(oid) / "tree"

    def contains(self, oid: str) -> bool:
        return (self.object_dir(oid) / "object.json").is_file()

    def object_ids(self) -> list[str]:
        return sorted(p.name for p in (self.root / "objects").iterdir() if (p / "object.json").is_file())

    # -- locking
    @contextlib.contextmanager
    def lock(self, oid: str, *, shared: bool = False) -> Iterator[None]:
        fd = os.open(self.root / "locks" / f"{oid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def tempdir(self, prefix: str) -> Iterator[Path]:
        """A locked scratch directory under tmp/, removed on exit (or by a later cleanup)."""
        while True:
            name = f"{prefix}-{uuid.uuid4().hex[:12]}"
            lockpath = self.root / "tmp" / f"{name}.lock"
            fd = os.open(lockpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a concurrent cleanup_stale() may have taken and unlinked the fresh lock file
            # between open and flock: then our lock protects nothing; try another name
            try:
                if os.stat(lockpath).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        path = self.root / "tmp" / name
        path.mkdir()
        try:
            yield path
        finally:
            rmtree(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lockpath)
            os.close(fd)

    def cleanup_stale(self) -> list[str]:
        """Remove tmp/ entries whose owner is gone (killed builds). Returns their names."""
        removed = []
        tmp = self.root / "tmp"
        for lockpath in tmp.glob("*.lock"):
            try:
                fd = os.open(lockpath, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live build owns it
                try:
                    rmtree(tmp / lockpath.name[: -len(".lock")])
                except InternalError:
                    continue  # still mounted (not root?): leave it, and its lock
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lockpath)
                removed.append(lockpath.name[: -len(".lock")])
            finally:
                os.close(fd)
        # entries without a lock file can only come from an older crash mid-creation
        for entry in tmp.iterdir():
            if entry.suffix != ".lock" and not (tmp / f"{entry.name}.lock").exists():
                try:
                    age = time.time() - entry.lstat().st_mtime
                except FileNotFoundError:
                    continue
                if age > 60:
                    with contextlib.suppress(InternalError):
                        rmtree(entry)
                        removed.append(entry.name)
        return removed

    # -- objects
    def commit(self, oid: str, tree: Path, *, move: bool = False, meta: dict[str, Any] | None = None) -> bool:
        """Store tree as object oid (copy, or rename when move=True). False if already present.

        With move=True the tree is consumed (renamed into the store) when stored; when the
        object already exists the caller keeps its tree.
        """
        with self.lock(oid):
            if self.contains(oid):
                return False
            with self.tempdir(f"obj-{oid[:16]}") as tmp:
                dest = tmp / "tree"
                if move:
                    os.rename(tree, dest)
                else:
                    try:
                        copy_tree(tree, dest)
                    except ToolError as e:
                        raise ToolError(
                            f"cannot store stage {oid[:12]} in the cache {self.root}: {e.message}",
                            argv=e.argv, returncode=e.returncode, stderr=e.stderr,
                            hint="free disk space, use another --cache, or store less with --checkpoint",
                        ) from None
                info = dict(meta or {})
                info.update({"id": oid, "created": int(time.time())})
                (tmp / "object.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
                final = self.object_dir(oid)
                if final.exists():  # a dir without object.json: leftover of an old crash
                    rmtree(final)
                os.rename(tmp, final)
                # tempdir() removes nothing now (renamed away); recreate the name for its cleanup
                tmp.mkdir()
            return True

    def restore(self, oid: str, dest: Path) -> None:
        """Copy object oid's tree to dest (must not exist)."""
        with self.lock(oid, shared=True):
            if not self.contains(oid):
                raise KeyError(oid)
            copy_tree(self.object_tree(oid), dest)

    def usage(self) -> int:
        return tree_usage(self.root / "objects")
