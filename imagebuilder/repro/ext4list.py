"""Every inode of an ext2/3/4 filesystem inside an image, read with debugfs (no mount).

:func:`superblock` is ``dumpe2fs -h`` as a dict; :func:`listing` walks the tree breadth-first
(one ``debugfs -f`` run per directory level, ``ls -p <INODE>``), then ``stat``s every inode in
one more run and hashes regular files' contents from one ``rdump /`` into a temporary
directory. Inodes are addressed by number (``<N>``), so names never need quoting.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ToolError
from ..run import require, run
from ..sources.tarball import file_sha256

_ENV = {"PAGER": "__none__", "DEBUGFS_PAGER": "__none__"}
_TIME = re.compile(r"^\s*(ctime|atime|mtime|crtime|dtime):\s+0x([0-9a-f]+)(?::([0-9a-f]+))?", re.M)
# dumpe2fs -h fields that only say when/how often the filesystem was touched, listed first
# so a report leads with what a build controls
SUPERBLOCK_SKIP = {"Checksum"}  # a function of the other fields


def _spec(image: Path, offset: int) -> str:
    return f"{image}?offset={offset}" if offset else str(image)


def superblock(image: Path, offset: int = 0) -> dict[str, str]:
    """``dumpe2fs -h`` fields (``Filesystem UUID``, ``Directory Hash Seed``, ``Filesystem
    created``, ``Last write time``, ``Free blocks``, ...)."""
    require("dumpe2fs")
    out = run(["dumpe2fs", "-h", _spec(image, offset)], env=_ENV).stdout.decode(errors="replace")
    fields: dict[str, str] = {}
    for line in out.splitlines():
        k, sep, v = line.partition(":")
        if sep and k and not k.startswith(" ") and k not in SUPERBLOCK_SKIP:
            fields[k.strip()] = " ".join(v.split())
    return fields


def _script(image: Path, offset: int, commands: list[str]) -> list[tuple[str, str]]:
    """Run debugfs commands in one process; [(command, its output)]."""
    require("debugfs")
    with tempfile.NamedTemporaryFile("w", prefix="imagebuilder-debugfs-", suffix=".cmd") as f:
        f.write("\n".join(commands) + "\n")
        f.flush()
        proc = run(["debugfs", "-f", f.name, _spec(image, offset)], env=_ENV, check=False)
    if proc.returncode != 0:
        raise ToolError(f"debugfs failed on {_spec(image, offset)}",
                        stderr=(proc.stderr or b"").decode(errors="replace"))
    text = (proc.stdout or b"").decode("utf-8", errors="surrogateescape")
    parts = re.split(r"^debugfs: (.*)$", text, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def _ts(sec_hex: str, extra_hex: str | None) -> str:
    sec = int(sec_hex, 16)
    if sec >= 1 << 31:
        sec -= 1 << 32
    nsec = 0
    if extra_hex:
        extra = int(extra_hex, 16)
        sec += (extra & 3) << 32
        nsec = extra >> 2
    t = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{t}.{nsec:09d}Z" if nsec else f"{t}Z"


def parse_stat(text: str) -> dict[str, Any]:
    """The fields of one ``debugfs stat`` output that a build decides."""
    r: dict[str, Any] = {}

    def grab(key: str, pat: str, conv=str) -> None:
        m = re.search(pat, text, re.M)
        if m:
            r[key] = conv(m.group(1))

    grab("type", r"Type: (\S+)")
    grab("mode", r"Mode:\s+(\d+)")
    grab("flags", r"Flags: (0x[0-9a-f]+)")
    grab("generation", r"Generation: (\d+)", int)
    grab("uid", r"User:\s+(\d+)", int)
    grab("gid", r"Group:\s+(\d+)", int)
    grab("size", r"Size: (\d+)\s*$", int)
    grab("links", r"Links: (\d+)", int)
    grab("target", r'Fast link dest: "(.*)"$')
    for m in _TIME.finditer(text):
        if m.group(1) != "dtime":
            r[m.group(1)] = _ts(m.group(2), m.group(3))
    xm = re.search(r"^Extended attributes:\n((?:  .*\n?)*)", text, re.M)
    if xm:
        r["xattrs"] = {ln.strip().split(" ", 1)[0]: ln.strip().split("= ", 1)[-1]
                       for ln in xm.group(1).splitlines() if ln.strip()}
    em = re.search(r"^(?:EXTENTS|BLOCKS):\n(.*?)(?:\n\S|\Z)", text, re.M | re.S)
    if em:
        r["blocks"] = " ".join(em.group(1).split())
    return r


def listing(image: Path, offset: int = 0, *, contents: bool = True,
            tmpdir: str | None = None) -> dict[str, dict[str, Any]]:
    """{path: {type, mode, uid, gid, size, links, flags, generation, inode, ctime, atime, mtime,
    crtime, xattrs?, target?, sha256?, blocks}} for every inode reachable from the root."""
    paths: dict[str, int] = {"/": 2}
    level = {"/": 2}
    while level:
        out = _script(image, offset, [f"ls -p <{ino}>" for ino in level.values()])
        nxt: dict[str, int] = {}
        for (parent, _ino), (_cmd, text) in zip(level.items(), out):
            for line in text.splitlines():
                # /INODE/MODE/UID/GID/NAME/SIZE/  (NAME may itself contain '/': take the ends)
                f = line.split("/")
                if len(f) < 7 or not f[1].isdigit():
                    continue
                name = "/".join(f[5:-2])
                if name in (".", "..") or not name:
                    continue
                ino = int(f[1])
                p = f"{parent.rstrip('/')}/{name}"
                paths[p] = ino
                if int(f[2], 8) & 0o170000 == 0o040000:
                    nxt[p] = ino
        level = nxt
    inos = sorted(set(paths.values()))
    stats = {ino: parse_stat(text) for ino, (_c, text) in
             zip(inos, _script(image, offset, [f"stat <{i}>" for i in inos]))}
    result: dict[str, dict[str, Any]] = {}
    for p, ino in sorted(paths.items()):
        rec = dict(stats.get(ino, {}))
        rec["inode"] = ino
        result[p] = rec
    if contents:
        with tempfile.TemporaryDirectory(prefix="imagebuilder-rdump-", dir=tmpdir) as td:
            _script(image, offset, [f"rdump <2> {td}"])
            dumped = Path(td) / "<2>"
            if not dumped.is_dir():  # debugfs names the dump after the source argument
                cands = [d for d in Path(td).iterdir() if d.is_dir()]
                dumped = cands[0] if cands else Path(td)
            for p, rec in result.items():
                if rec.get("type") == "regular":
                    f = dumped / p.lstrip("/")
                    if f.is_file() and not f.is_symlink():
                        rec["sha256"] = file_sha256(f)
                elif rec.get("type") == "symlink" and "target" not in rec:
                    f = dumped / p.lstrip("/")
                    if f.is_symlink():
                        rec["target"] = os.readlink(f)
    return result
