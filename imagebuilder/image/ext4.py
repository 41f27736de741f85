"""Read and change files of an ext4 filesystem inside an image file, without mounting.

Everything goes through ``debugfs`` (e2fsprogs), which opens ``IMAGE?offset=BYTES``
(unix_io's offset syntax) so a partition is used in place, rootless. Reads are one
``debugfs -R`` call each; changes are queued and applied by :meth:`Ext4Fs.commit` in
one ``debugfs -w -f SCRIPT`` run, then read back and compared (debugfs reports errors
on stderr but exits 0, so the read-back is the real check).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadImageError, ToolError
from ..run import require, run

log = logging.getLogger("imagebuilder.image.ext4")

EXT4_MAGIC = 0xEF53


@dataclass(frozen=True)
class DirEntry:
    name: str
    mode: int
    size: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


def _quote(path: str) -> str:
    """debugfs argument quoting (its parser understands double quotes)."""
    if re.search(r'["\n\\]', path):
        raise BadImageError(f"unsupported character in path {path!r}")
    return f'"{path}"' if re.search(r"\s", path) else path


class Ext4Fs:
    """An ext4 filesystem at ``offset`` bytes into ``image`` (a file or a partition copy)."""

    def __init__(self, image: str | os.PathLike[str], offset: int = 0) -> None:
        require("debugfs")
        self.image = Path(image)
        self.offset = int(offset)
        self._script: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="imagebuilder-ext4-")
        self._n = 0
        self._expect: dict[str, bytes | None] = {}  # path -> content after commit (None: gone)
        with open(self.image, "rb") as f:
            f.seek(self.offset + 1024 + 0x38)
            magic = int.from_bytes(f.read(2), "little")
        if magic != EXT4_MAGIC:
            raise BadImageError(f"{self.image}: no ext2/3/4 filesystem at offset {self.offset}")

    # ------------------------------------------------------------------ plumbing

    @property
    def spec(self) -> str:
        return f"{self.image}?offset={self.offset}" if self.offset else str(self.image)

    def _debugfs(self, request: str, *, binary: bool = False) -> tuple[bytes, str]:
        proc = run(["debugfs", "-R", request, self.spec], check=False)
        err = (proc.stderr or b"").decode(errors="replace")
        if proc.returncode != 0:
            raise ToolError(f"debugfs failed on {self.spec}: {err.strip()}", stderr=err)
        return proc.stdout or b"", err

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "Ext4Fs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def _stat(self, path: str) -> str | None:
        out, err = self._debugfs(f"stat {_quote(path)}")
        if "not found" in err or not out.strip():
            return None
        return out.decode(errors="replace")

    def readlink(self, path: str) -> str | None:
        st = self._stat(path)
        if st is None or "Type: symlink" not in st:
            return None
        m = re.search(r'Fast link dest: "(.*)"', st)
        if m:
            return m.group(1)
        data, _ = self._debugfs(f"cat {_quote(path)}")  # slow symlink: target in a block
        return data.decode(errors="replace")

    def resolve(self, path: str) -> str:
        """``path`` with every symlink resolved (inside this filesystem)."""
        parts = [p for p in path.strip("/").split("/") if p]
        cur = "/"
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                cur = posixpath.dirname(cur.rstrip("/")) or "/"
                continue
            if name == ".":
                continue
            cand = posixpath.join(cur, name)
            target = self.readlink(cand)
            if target is not None:
                hops += 1
                if hops > 20:
                    raise BadImageError(f"too many symlinks resolving {path}")
                base = "/" if target.startswith("/") else cur
                parts = [p for p in target.split("/") if p] + parts
                cur = base
                continue
            cur = cand
        return cur

    def exists(self, path: str) -> bool:
        return self._stat(path) is not None

    def read(self, path: str) -> bytes | None:
        """File contents, or None if there is no such file."""
        st = self._stat(path)
        if st is None:
            return None
        if "Type: regular" not in st:
            raise BadImageError(f"{path}: not a regular file")
        data, _ = self._debugfs(f"cat {_quote(path)}")
        return data

    def listdir(self, path: str) -> list[DirEntry]:
        out, err = self._debugfs(f"ls -p {_quote(path)}")
        if "not found" in err:
            return []
        entries = []
        for line in out.decode(errors="replace").splitlines():
            # /INODE/MODE/UID/GID/NAME/SIZE/
            f = line.split("/")
            if len(f) < 7 or f[5] in (".", ".."):
                continue
            entries.append(DirEntry(name=f[5], mode=int(f[2], 8), size=int(f[6] or 0)))
        return entries

    # ------------------------------------------------------------------ queued changes

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._n += 1
        local = Path(self._tmp.name) / f"f{self._n}"
        local.write_bytes(data)
        q = _quote(path)
        self._script += [f"rm {q}", f"write {local} {q}", f"sif {q} mode 0{0o100000 | mode:o}",
                         f"sif {q} uid 0", f"sif {q} gid 0"]
        self._expect[path] = data

    def remove(self, path: str) -> None:
        self._script.append(f"rm {_quote(path)}")
        self._expect[path] = None

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        q = _quote(path)
        self._script += [f"mkdir {q}", f"sif {q} mode 0{0o040000 | mode:o}"]

    def rmdir(self, path: str) -> None:
        self._script.append(f"rmdir {_quote(path)}")

    @property
    def pending(self) -> bool:
        return bool(self._script)

    def commit(self) -> None:
        """Apply the queued changes in one debugfs run and verify them by reading back."""
        if not self._script:
            return
        script = Path(self._tmp.name) / "script"
        script.write_text("\n".join(self._script) + "\n")
        proc = run(["debugfs", "-w", "-f", str(script), self.spec], check=False)
        err = (proc.stderr or b"").decode(errors="replace")
        if proc.returncode != 0:
            raise ToolError(f"debugfs -w failed on {self.spec}: {err.strip()}", stderr=err)
        self._script = []
        for path, want in self._expect.items():
            got = self.read(path) if want is not None else (None if not self.exists(path) else b"?")
            if got != want:
                raise ToolError(f"debugfs did not apply the change to {path} on {self.spec}",
                                stderr=err)
        self._expect = {}

    def fsck(self) -> None:
        """``e2fsck -fn``: the filesystem is consistent (read-only check)."""
        require("e2fsck")
        proc = run(["e2fsck", "-fn", self.spec], check=False)
        if proc.returncode != 0:
            out = (proc.stdout or b"").decode(errors="replace")
            raise ToolError(f"e2fsck finds {self.spec} inconsistent after the change",
                            stderr=out[-2000:])
