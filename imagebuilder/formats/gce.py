"""Google Compute Engine image tarball: ``NAME-gcp.tar.gz`` holding one member,
``disk.raw``, in a sparse GNU tar (``--format=oldgnu``), gzip-compressed.

GCE's import rules: the member is named ``disk.raw`` and its size is a whole number of
GiB. A raw of another size is padded with a hole to the next GiB in a sparse copy and
its backup GPT moved to the new end (``common.pad_disk``); a raw that already is a
whole GiB is archived in place (through a ``disk.raw`` symlink tar dereferences).

Deterministic: GNU tar with ``--sort=name --mtime=@EPOCH --owner=0 --group=0
--numeric-owner --mode=0644``, compressed by ``pigz -n`` (no name, no time stamp; pigz's
output does not depend on its thread count). ``TAR_OPTIONS`` and ``PIGZ`` from the
environment are neutralised. Python's tarfile cannot write oldgnu sparse members, hence
GNU tar. The sparse map comes from the filesystem (``--hole-detection=seek``): the same
raw, produced and copied the same way (every copy here keeps holes as holes), gives the
same archive. ``--hole-detection=raw`` would make the map depend on the bytes alone, but
GNU tar 1.34 scans in 512-byte reads, about 10 s per GiB of holes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserInputError
from ..image.disk import copy_sparse
from ..run import require, run
from .common import GiB, Artifact, named_temp_output, pad_disk, raw_size, round_up

FORMAT = "gce"
MEMBER = "disk.raw"
MAX_SIZE = None
LEVELS = range(1, 10)


def file_name(name: str) -> str:
    return f"{name}-gcp.tar.gz"


def tar_argv(out: Path, workdir: Path, *, epoch: int, level: int) -> list[str]:
    return ["tar", "--create", f"--file={out}", "--format=oldgnu", "--sparse",
            "--hole-detection=seek", "--dereference", "--sort=name", f"--mtime=@{int(epoch)}",
            "--owner=0", "--group=0", "--numeric-owner", "--mode=0644",
            f"--use-compress-program=pigz -n -{level}", f"--directory={workdir}", MEMBER]


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, epoch: int, level: int = 6,
            force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    if level not in LEVELS:
        raise UserInputError(f"gce: gzip level {level} is not 1..9")
    if dest.name == MEMBER:
        raise UserInputError(f"{dest}: the tarball cannot be named {MEMBER}", hint=f"use {file_name('NAME')}")
    size = raw_size(raw)
    target = round_up(size, GiB)
    require("tar", "pigz")
    with named_temp_output(dest, force=force) as tmp:
        workdir = tmp.parent
        disk = workdir / MEMBER
        if target == size:
            disk.symlink_to(raw.resolve())
        else:
            with open(raw, "rb") as fi, open(disk, "wb") as fo:
                copy_sparse(fi, fo, 0, size, 0)
            pad_disk(disk, target)
        run(tar_argv(tmp, workdir, epoch=epoch, level=level),
            env={"TAR_OPTIONS": "", "PIGZ": "", "LC_ALL": "C"})
    return Artifact(dest, FORMAT, target, patched=[] if target == size else [f"padded to {target} bytes"])
