"""Safe extraction of root filesystem tarballs (also used for OCI layers).

Python's ``tarfile`` does the unpacking; :func:`check_member` is the filter that decides
what may be written, because a root filesystem needs what the stdlib ``data`` filter
forbids (setuid bits, owners, absolute symlinks like ``/etc/localtime``) while still
refusing anything that could write outside the target:

- member names with ``..`` components or leaving the root → rejected (error);
- hard links whose target is absolute or leaves the root → rejected;
- relative symlinks pointing above the root → rejected; absolute symlinks are kept (they
  resolve inside the image at run time) and are never followed while extracting: no member
  is written through a symlinked parent, and an existing non-directory at a member's path
  is removed first instead of being opened;
- device nodes are created only as root, skipped (counted) otherwise;
- owners are numeric and kept as root; ``SCHILY.xattr.*`` PAX records are applied.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import BadImageError, UserInputError


class UnsafeArchiveError(BadImageError):
    """An archive member would escape the target directory."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    return h.hexdigest()


def normalize_name(name: str) -> str:
    """The member's path relative to the root ('' for the root itself); raises if it escapes."""
    n = name.lstrip("/")
    norm = posixpath.normpath(n) if n else "."
    if norm == "." or norm == "":
        return ""
    parts = norm.split("/")
    if ".." in parts or ".." in n.split("/"):
        raise UnsafeArchiveError(f"archive member {name!r} has '..' in its path")
    return norm


def _escapes(base_dir: str, target: str) -> bool:
    """Does a relative link target, taken from base_dir (root-relative), leave the root?"""
    depth = 0 if not base_dir else len(base_dir.split("/"))
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


@dataclass
class ExtractStats:
    files: int = 0
    skipped_devices: list[str] = field(default_factory=list)


def check_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Validate one member and return a copy with a normalized, root-relative name."""
    name = normalize_name(member.name)
    m = copy.copy(member)
    m.name = name or "."
    if member.islnk():
        link = member.linkname
        if link.startswith("/"):
            raise UnsafeArchiveError(f"hard link {member.name!r} -> {link!r} is absolute")
        target = normalize_name(link) if link else ""
        if not target:
            raise UnsafeArchiveError(f"hard link {member.name!r} points at the root")
        m.linkname = target
    elif member.issym():
        link = member.linkname
        if not link.startswith("/") and _escapes(posixpath.dirname(name), link):
            raise UnsafeArchiveError(f"symlink {member.name!r} -> {link!r} leaves the root")
    return m


def assert_no_symlink_parents(root: Path, rel: str) -> None:
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeArchiveError(
                f"archive member {rel!r} would be written through the symlink {cur.relative_to(root)}")


def _clear_path(path: Path, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _apply_xattrs(path: Path, member: tarfile.TarInfo) -> None:
    for key, value in (member.pax_headers or {}).items():
        if not key.startswith("SCHILY.xattr."):
            continue
        attr = key[len("SCHILY.xattr."):]
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        try:
            os.setxattr(path, attr, raw, follow_symlinks=False)
        except OSError:
            pass  # e.g. security.* without privileges, or a filesystem without xattrs


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
                   stats: ExtractStats, is_root: bool, *, link_symlinks: bool = False) -> str | None:
    """Extract one (already checked) member into root. Returns its relative path, or None if skipped.

    A hard link to a symlink is refused, unless link_symlinks: then the symlink itself gets
    the new name (never what it points to), as in the ostree checkouts of a stored tree.
    """
    rel = member.name if member.name != "." else ""
    if (member.ischr() or member.isblk()) and not is_root:
        stats.skipped_devices.append(rel)
        return None
    if rel:
        assert_no_symlink_parents(root, rel)
        _clear_path(root / rel, keep_dir=member.isdir())
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    if member.islnk():
        assert_no_symlink_parents(root, member.linkname)
        if not os.path.lexists(root / member.linkname):
            raise BadImageError(f"hard link {rel!r}: target {member.linkname!r} not in archive")
        if os.path.islink(root / member.linkname):
            if not link_symlinks:
                # tarfile's link() follows it (AT_SYMLINK_FOLLOW) and could pull in a host file
                raise UnsafeArchiveError(f"hard link {rel!r} points at the symlink {member.linkname!r}")
            os.link(root / member.linkname, root / rel, follow_symlinks=False)
            stats.files += 1
            return rel
    # a hard link shares its target's inode: its own header must not re-chmod/chown it
    kwargs = {"set_attrs": not member.islnk(), "numeric_owner": True}
    if hasattr(tarfile, "fully_trusted_filter"):
        kwargs["filter"] = "fully_trusted"  # our own checks above replace the stdlib filter
    tar.extract(member, root, **kwargs)
    if member.pax_headers:
        _apply_xattrs(root / rel if rel else root, member)
    stats.files += 1
    return rel


def open_archive(path_or_file: Path | IO[bytes]) -> tarfile.TarFile:
    try:
        if isinstance(path_or_file, (str, Path)):
            return tarfile.open(path_or_file, "r:*")
        return tarfile.open(fileobj=path_or_file, mode="r:*")
    except tarfile.ReadError as e:
        raise BadImageError(f"{path_or_file}: not a (supported) tar archive: {e}") from None


def extract(path: Path, root: Path, *, expected_sha256: str | None = None) -> ExtractStats:
    """Safely extract a root filesystem tarball into root."""
    path, root = Path(path), Path(root)
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise BadImageError(f"{path}: content changed since the manifest was made (sha256 mismatch)",
                            hint="regenerate the manifest")
    root.mkdir(parents=True, exist_ok=True)
    stats = ExtractStats()
    is_root = os.geteuid() == 0
    dirs: list[tarfile.TarInfo] = []
    with open_archive(path) as tar:
        for member in tar:
            m = check_member(member)
            if m.isdir():
                dirs.append(m)
            extract_member(tar, m, root, stats, is_root)
        # directory mtimes/modes again at the end: extracting their contents changed them
        for d in reversed(dirs):
            p = root / d.name if d.name != "." else root
            if p.is_dir() and not p.is_symlink():
                try:
                    os.utime(p, (d.mtime, d.mtime))
                    os.chmod(p, d.mode)
                except OSError:
                    pass
    return stats
