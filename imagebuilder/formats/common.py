"""What every format converter shares: the input check, size limits, the named temp
output, ``qemu-img convert`` and the artifact record.

A converter reads a raw disk image and writes one artifact. It never touches the raw,
it writes into a hidden temp directory beside the target under the target's own name
(some formats record their file name inside: a vmdk descriptor names its extent) and
renames the finished file into place; on any error nothing is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..disk.layout import derive_uuid
from ..errors import BadImageError, InvalidConfigError, UserInputError
from ..fsutil import check_output_target, commit_tempfile
from ..image.disk import _extents
from ..run import require, run

SECTOR = 512
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


@dataclass
class Artifact:
    """One converted file. ``virtual_size``: the disk size a VM sees.
    ``patched``: the fields rewritten from the seed/epoch for determinism."""

    path: Path
    format: str
    virtual_size: int
    patched: list[str] = field(default_factory=list)
    uncompressed_sha256: str | None = None
    compression: str | None = None

    def record(self) -> dict:
        """The artifact's entry for meta.json (size and sha256 computed now)."""
        rec = {"path": self.path.name, "format": self.format, "size": self.path.stat().st_size,
               "sha256": sha256_file(self.path), "virtual_size": self.virtual_size}
        if self.compression:
            rec["compression"] = self.compression
            rec["uncompressed_sha256"] = self.uncompressed_sha256
        if self.patched:
            rec["patched"] = list(self.patched)
        return rec


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes; holes are hashed as zeros without reading them."""
    h = hashlib.sha256()
    zeros = bytes(4 * MiB)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        for start, n in [*_extents(f.fileno(), 0, size), (size, 0)]:
            gap = start - pos
            while gap > 0:
                k = min(gap, len(zeros))
                h.update(zeros if k == len(zeros) else zeros[:k])
                gap -= k
            f.seek(start)
            left = n
            while left > 0:
                chunk = f.read(min(left, 4 * MiB))
                if not chunk:
                    raise BadImageError(f"{path}: file shrank while being read")
                h.update(chunk)
                left -= len(chunk)
            pos = start + n
    return h.hexdigest()


def raw_size(raw: str | os.PathLike[str]) -> int:
    """Size of the raw disk image; refuses anything that is not a whole number of sectors."""
    p = Path(raw)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserInputError(f"{p}: raw disk image not found") from None
    if not p.is_file():
        raise UserInputError(f"{p}: not a regular file")
    if st.st_size == 0 or st.st_size % SECTOR:
        raise BadImageError(f"{p}: size {st.st_size} is not a positive multiple of {SECTOR} bytes",
                            hint="a raw disk image is a whole number of sectors")
    with open(p, "rb") as f:
        head = f.read(512)
    if head[:4] == b"QFI\xfb" or head[:4] == b"KDMV" or head[:8] in (b"vhdxfile", b"conectix"):
        raise BadImageError(f"{p}: is not a raw disk image (it has a {head[:8]!r} header)",
                            hint="convert from the raw image the build produced")
    return st.st_size


def check_limit(fmt: str, size: int, limit: int | None, what: str = "virtual size") -> None:
    if limit is not None and size > limit:
        raise InvalidConfigError(f"{fmt}: {what} {human(size)} exceeds the format's limit of {human(limit)}",
                                 hint=f"make the disk smaller or choose another format than {fmt}")


def human(n: int) -> str:
    """``2040 GiB``: the largest unit that divides n, else bytes."""
    for unit, k in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} bytes"


def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def seed_bytes(seed: str, purpose: str, n: int) -> bytes:
    """``n`` stable pseudo-random bytes for one purpose (n <= 32)."""
    return hashlib.sha256(f"imagebuilder:{seed}:{purpose}".encode()).digest()[:n]


def seed_uuid(seed: str, purpose: str):
    return derive_uuid(seed, purpose)


@contextlib.contextmanager
def named_temp_output(dest: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield ``TMPDIR/<dest's name>`` in a hidden temp directory beside dest.

    On success the file is fsync'ed and renamed onto dest (no clobbering without
    ``force``, see :func:`imagebuilder.fsutil.commit_tempfile`); the directory, with
    anything else a converter put there, is removed either way. The directory is
    also the converter's scratch space (it lives on dest's filesystem, so hard links
    and renames work).
    """
    dest = Path(dest)
    parent = check_output_target(dest, force=force)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
    tmp = tmpdir / dest.name
    try:
        yield tmp
        if not tmp.is_file():
            raise BadImageError(f"{dest}: the converter produced no file")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        commit_tempfile(tmp, dest, force=force)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def qemu_img_convert(src: Path, dest: Path, fmt: str, options: dict[str, str | bool] | None = None,
                     *, compress: bool = False) -> None:
    """``qemu-img convert -f raw -O FMT [-o k=v,...] [-c] SRC DEST`` (sequential, so the
    output's layout depends only on the input)."""
    require("qemu-img")
    argv: list[str] = ["qemu-img", "convert", "-f", "raw", "-O", fmt]
    if options:
        opts = [k if v is True else f"{k}={v}" for k, v in options.items() if v is not False]
        argv += ["-o", ",".join(opts)]
    if compress:
        argv.append("-c")
    run([*argv, str(src), str(dest)])


def qemu_img_info(path: Path, fmt: str | None = None) -> dict:
    import json

    require("qemu-img")
    argv = ["qemu-img", "info", "--output=json"]
    if fmt:
        argv += ["-f", fmt]
    return json.loads(run([*argv, str(path)]).stdout)


def patch_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def pad_disk(path: Path, new_size: int) -> bool:
    """Grow the disk image at ``path`` to ``new_size`` bytes (a hole at the end) and, if it
    has a GPT, move the backup header and entries to the new end and widen the usable
    range, as ``sgdisk -e`` does; the stale backup at the old end is zeroed.
    Returns whether a GPT was moved."""
    from dataclasses import replace

    from ..disk.gpt import read_gpt, write_gpt

    old_size = path.stat().st_size
    if new_size < old_size:
        raise BadImageError(f"{path}: cannot shrink a disk from {old_size} to {new_size} bytes")
    if new_size == old_size:
        return False
    try:
        table = read_gpt(path)
    except BadImageError:
        table = None
    with open(path, "r+b") as f:
        f.truncate(new_size)
    if table is None or table.size_bytes != old_size:
        return False
    ss = table.sector_size
    stale = table.entry_array_sectors + 1  # the old backup; the new one may overlap it
    with open(path, "r+b") as f:
        f.seek((table.total_sectors - stale) * ss)
        f.write(bytes(stale * ss))
    write_gpt(path, replace(table, total_sectors=new_size // ss, last_usable=0))
    return True
