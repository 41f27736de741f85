"""Filesystem images built from directory trees, without mounting anything.

* ext4: ``mkfs.ext4 -d`` with the UUID, hash seed and (via ``E2FSPROGS_FAKE_TIME``) the
  superblock times fixed. ``mke2fs -d`` copies each source inode's atime and ctime, which
  nobody can fix in the source (reading changes atime, ctime cannot be set), so a
  ``debugfs -w`` pass afterwards sets atime/ctime/crtime of every inode to the source
  epoch and clamps mtimes to it. Result: identical images from the same tree.
* vfat (ESP): ``mkfs.vfat --invariant -i VOLID`` and ``mcopy -s -p -m`` from a staged copy
  whose mtimes are set to the source epoch. Identical images from the same tree.
* xfs: ``mkfs.xfs -p PROTOFILE`` (xfsprogs 6.1). Not byte-reproducible (xfsprogs stamps
  inode times with the wall clock), hard links become separate copies and xattrs
  are not copied: the protofile format has neither.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from pathlib import Path

from ..errors import UserInputError
from ..run import run

log = logging.getLogger(__name__)

EXT4_FEATURES_BOOT = ["metadata_csum_seed"]  # as FCOS: UUID changeable while mounted


def _fresh_file(path: Path, size: int) -> None:
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


def _walk_inodes(src: Path):
    """Yield (path relative to src with leading '/', lstat) once per inode, parents first."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        rootp = Path(root)
        rel_root = "/" + os.path.relpath(root, src) if rootp != src else "/"
        if rel_root == "/.":
            rel_root = "/"
        entries = [(rel_root, rootp)] + [
            ((rel_root.rstrip("/") + "/" + n), rootp / n) for n in sorted(files)]
        # symlinks to directories show up in dirs: os.walk does not follow them
        entries += [((rel_root.rstrip("/") + "/" + n), rootp / n) for n in sorted(dirs)
                    if (rootp / n).is_symlink()]
        for rel, p in entries:
            st = os.lstat(p)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            yield rel, st


def tree_usage(src: Path) -> tuple[int, int]:
    """(bytes allocated, inodes) of a tree, counting hard-linked inodes once."""
    total = n = 0
    for _rel, st in _walk_inodes(src):
        total += st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else 4096
        n += 1
    return total, n


def check_fits(src: Path, size: int, what: str) -> None:
    """Refuse early, with a useful message, a tree that cannot fit a filesystem of ``size``."""
    used, inodes = tree_usage(src)
    # ext4 metadata (inode tables, journal, bitmaps) takes ~5-8 % of a small filesystem
    need = int(used * 1.1) + inodes * 256 + (16 << 20)
    if need > size:
        raise UserInputError(
            f"{what}: the tree needs about {need >> 20} MiB, the partition has {size >> 20} MiB",
            hint="make the disk (or that partition) larger")


def allocated_inodes(image: Path) -> list[int]:
    """Inode numbers in use in an ext4 image (root + regular inodes), from its bitmaps."""
    text = run(["dumpe2fs", image], text=True).stdout
    m_ipg = re.search(r"^Inodes per group:\s+(\d+)", text, re.M)
    m_cnt = re.search(r"^Inode count:\s+(\d+)", text, re.M)
    m_first = re.search(r"^First inode:\s+(\d+)", text, re.M)
    if not (m_ipg and m_cnt and m_first):
        from ..errors import ToolError
        raise ToolError("dumpe2fs output not understood", argv=["dumpe2fs"], stderr=text[-2000:])
    ipg, count, first = int(m_ipg.group(1)), int(m_cnt.group(1)), int(m_first.group(1))
    free = bytearray(count + 1)
    groups = re.findall(r"^\s+Free inodes: ?(.*)$", text, re.M)
    if len(groups) != -(-count // ipg):
        from ..errors import ToolError
        raise ToolError(f"dumpe2fs listed {len(groups)} groups, expected {-(-count // ipg)}",
                        argv=["dumpe2fs"])
    for spec in groups:
        for part in filter(None, (x.strip() for x in spec.split(","))):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
            free[a:b + 1] = b"\x01" * (b - a + 1)
    return [2] + [i for i in range(first, count + 1) if not free[i]]


def normalize_ext4_times(image: Path, epoch: int) -> int:
    """Set atime and ctime of every inode in use to ``epoch`` (``mke2fs -d`` copies them
    from the source tree, where they change on every read/metadata update).

    Works on inode numbers (O(1) per inode; path lookups in debugfs scan directories
    linearly). mtimes are kept as in the tree; crtime is already E2FSPROGS_FAKE_TIME.
    Returns the number of inodes changed.
    """
    inodes = allocated_inodes(image)
    cmds = []
    for ino in inodes:
        for fld in ("atime", "ctime"):
            cmds.append(f"sif <{ino}> {fld} @{epoch}")
            cmds.append(f"sif <{ino}> {fld}_extra 0")  # in case a newer mke2fs copies ns
    cmdfile = image.with_suffix(image.suffix + ".debugfs")
    cmdfile.write_text("\n".join(cmds) + "\n")
    try:
        proc = run(["debugfs", "-w", "-f", cmdfile, image], env={"E2FSPROGS_FAKE_TIME": str(epoch)},
                   text=True)
    finally:
        cmdfile.unlink()
    # debugfs reports per-command errors on stderr but exits 0
    errs = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("debugfs ")]
    if errs:
        from ..errors import ToolError
        raise ToolError(f"debugfs could not set inode times: {errs[0]}", argv=["debugfs"],
                        stderr=proc.stderr)
    return len(inodes)


def make_ext4(image: Path, size: int, src: Path | None, *, uuid: str, label: str,
              hash_seed: str, epoch: int, features: list[str] | None = None) -> None:
    """Create an ext4 filesystem image of ``size`` bytes populated from ``src``."""
    _fresh_file(image, size)
    ext = [f"hash_seed={hash_seed}", "root_owner=0:0"]
    argv: list[str | os.PathLike[str]] = [
        "mkfs.ext4", "-q", "-F", "-b", "4096", "-T", "default", "-U", uuid, "-L", label,
        "-E", ",".join(ext)]
    if features:
        argv += ["-O", ",".join(features)]
    if src is not None:
        argv += ["-d", src]
    argv.append(image)
    env = {"E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch)}
    run(argv, env=env)
    if src is not None:
        normalize_ext4_times(image, epoch)


def stage_tree_with_mtime(src: Path, dest: Path, epoch: int) -> None:
    """Copy src into dest (merging) and set every mtime to epoch (for FAT via mtools)."""
    shutil.copytree(src, dest, symlinks=False, dirs_exist_ok=True)
    set_mtimes(dest, epoch)


def set_mtimes(tree: Path, epoch: int) -> None:
    for root, dirs, files in os.walk(tree):
        for n in files + dirs:
            os.utime(os.path.join(root, n), (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def make_vfat(image: Path, size: int, src: Path | None, *, volid: str, label: str,
              sector_size: int, epoch: int) -> None:
    """Create a FAT image (FAT16/32 chosen by mkfs.fat for the size) and copy src in.

    ``src`` must already have normalized mtimes (see :func:`stage_tree_with_mtime`).
    """
    _fresh_file(image, size)
    env = {"SOURCE_DATE_EPOCH": str(epoch)}
    run(["mkfs.vfat", "--invariant", "-i", volid, "-n", label, "-S", str(sector_size), image],
        env=env)
    if src is None:
        return
    entries = sorted(os.listdir(src))
    if not entries:
        return
    for n in entries:
        st = os.lstat(src / n)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise UserInputError(f"{src / n}: only files and directories can go on a FAT ESP")
    env["MTOOLS_SKIP_CHECK"] = "1"
    run(["mcopy", "-s", "-p", "-m", "-Q", "-i", image, *[src / n for n in entries], "::/"],
        env=env)


# ------------------------------------------------------------------ xfs

def _proto_escape_ok(name: str) -> bool:
    return not any(c.isspace() for c in name) and name != "$"


def xfs_protofile(src: Path) -> str:
    """The mkfs.xfs protofile text describing tree src (see mkfs.xfs(8), -p)."""
    lines = ["/dev/null", "0 0"]

    def mode(st: os.stat_result, kind: str) -> str:
        perm = stat.S_IMODE(st.st_mode)
        su = "u" if perm & stat.S_ISUID else "-"
        sg = "g" if perm & stat.S_ISGID else "-"
        return f"{kind}{su}{sg}{perm & 0o777:03o} {st.st_uid} {st.st_gid}"

    def walk(d: Path, depth: int) -> None:
        ind = " " * depth
        for n in sorted(os.listdir(d)):
            p = d / n
            if not _proto_escape_ok(n):
                raise UserInputError(f"{p}: names with spaces cannot go into an xfs protofile",
                                     hint="use root_fs: ext4")
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                lines.append(f"{ind}{n} {mode(st, 'd')}")
                walk(p, depth + 1)
                lines.append(f"{ind}$")
            elif stat.S_ISREG(st.st_mode):
                lines.append(f"{ind}{n} {mode(st, '-')} {p}")
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                if not _proto_escape_ok(target):
                    raise UserInputError(f"{p}: symlink target with spaces unsupported by xfs protofile")
                lines.append(f"{ind}{n} {mode(st, 'l')} {target}")
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                k = "c" if stat.S_ISCHR(st.st_mode) else "b"
                lines.append(f"{ind}{n} {mode(st, k)} {os.major(st.st_rdev)} {os.minor(st.st_rdev)}")
            elif stat.S_ISFIFO(st.st_mode):
                lines.append(f"{ind}{n} {mode(st, 'p')}")
            # sockets are skipped: they cannot be recreated meaningfully

    st = os.lstat(src)
    lines.append(mode(st, "d"))
    walk(src, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


XFS_METHODS = ("auto", "mount", "protofile")


def can_loop_mount() -> bool:
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


def make_xfs(image: Path, size: int, src: Path | None, *, uuid: str, label: str,
             method: str = "auto") -> str:
    """Create an XFS image (agcount 2, like FCOS) populated from src. Returns the method.

    ``mount`` (the ``auto`` choice as root): loop-mount the image and ``cp -a`` the tree in,
    which keeps hard links (an ostree deployment shares its files with the repo), xattrs
    and every mode bit. ``protofile``: rootless ``mkfs.xfs -p``; hard links become
    copies, xattrs and the sticky bit are dropped, names with spaces are refused.
    """
    if method not in XFS_METHODS:
        raise UserInputError(f"xfs populate method must be one of {', '.join(XFS_METHODS)}")
    if method == "auto":
        method = "mount" if src is not None and can_loop_mount() else "protofile"
    _fresh_file(image, size)
    argv: list[str | os.PathLike[str]] = ["mkfs.xfs", "-q", "-f", "-L", label, "-m", f"uuid={uuid}",
                                          "-d", "agcount=2"]
    if src is None or method == "mount":
        run([*argv, image])
        if src is not None:
            _populate_by_mount(image, src)
        return method
    proto = image.with_suffix(image.suffix + ".proto")
    proto.write_text(xfs_protofile(src))
    try:
        run([*argv, "-p", proto, image])
    finally:
        proto.unlink()
    return method


def _populate_by_mount(image: Path, src: Path) -> None:
    mnt = image.with_suffix(image.suffix + ".mnt")
    mnt.mkdir()
    try:
        run(["mount", "-t", "xfs", "-o", "loop", image, mnt])
        try:
            run(["cp", "-a", "--reflink=never", f"{src}/.", f"{mnt}/"])
        finally:
            run(["umount", mnt])
    finally:
        mnt.rmdir()
