"""Directory source: fingerprint a root filesystem directory and copy it preserving everything."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserInputError
from ..run import run


def fingerprint(root: Path) -> str:
    """sha256 over (path, type/mode, owner, size, mtime, link target) of every entry.

    Cheap (metadata only) and changes whenever a file is added, removed or rewritten, so the
    source stage's id — and with it every cached stage downstream — follows the directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"{root}: directory not found")
    h = hashlib.sha256()
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name)
        except OSError as e:
            raise UserInputError(f"{root / rel}: {e.strerror}") from None
        for e in entries:
            st = e.stat(follow_symlinks=False)
            path = f"{rel}/{e.name}" if rel else e.name
            link = os.readlink(e.path) if e.is_symlink() else ""
            h.update(f"{path}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0{link}\n".encode("utf-8", "surrogateescape"))
            if e.is_dir(follow_symlinks=False):
                stack.append(path)
    return h.hexdigest()


def copy_tree(src: Path, dest: Path) -> None:
    """Copy src's contents into dest (owners, modes, xattrs, hard links, sparse files)."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise UserInputError(f"{src}: directory not found")
    dest.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", f"{src}/.", f"{dest}/"])
