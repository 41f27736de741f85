"""Stream-optimized VMDK (AWS ``import-snapshot``, vSphere, the disk inside an OVA).

``qemu-img convert -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic,compat6``
as coreos-assembler runs it. QEMU writes a random content id (``CID=``, 8 hex digits)
into the embedded descriptor and names the extent after the output file; both are made
stable: the file is written under its final name, and the CID is replaced with one
derived from the seed (same length, so nothing moves).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from ..errors import BadImageError
from .common import (SECTOR, Artifact, check_limit, named_temp_output, qemu_img_convert, raw_size,
                     seed_bytes)

FORMAT = "vmdk"
MAX_SIZE = None  # streamOptimized carries a 64-bit capacity; QEMU enforces its own limits
ADAPTER_TYPES = ("ide", "buslogic", "lsilogic", "legacyESX")
_HEADER = struct.Struct("<4sIIQQQQ")  # magic, version, flags, capacity, grain, desc offset, desc size
_CID_RE = re.compile(rb"^CID=[0-9a-fA-F]{1,8}$", re.MULTILINE)
NO_PARENT = 0xFFFFFFFF


def derived_cid(seed: str) -> int:
    cid = int.from_bytes(seed_bytes(seed, "vmdk-cid", 4), "big")
    return cid ^ 0x1 if cid >= 0xFFFFFFFE else cid  # ffffffff means "no parent"


def read_descriptor(path: Path) -> tuple[dict, int, int]:
    """The embedded descriptor as ``{key: value}`` plus its byte offset and length.
    Extent lines are under ``"extents"``; ``capacity`` (sectors) comes from the header."""
    with open(path, "rb") as f:
        head = f.read(SECTOR)
        if len(head) < _HEADER.size or head[:4] != b"KDMV":
            raise BadImageError(f"{path}: not a sparse VMDK (no KDMV header)")
        _magic, version, flags, capacity, grain, doff, dsize = _HEADER.unpack_from(head)
        if not doff or not dsize:
            raise BadImageError(f"{path}: VMDK without an embedded descriptor")
        f.seek(doff * SECTOR)
        text = f.read(dsize * SECTOR)
    info: dict = {"header_version": version, "flags": flags, "capacity": capacity, "grain": grain,
                  "extents": []}
    for line in text.split(b"\0", 1)[0].decode("ascii", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)\s+"([^"]*)"', line)
        if m:
            info["extents"].append({"access": m[1], "sectors": int(m[2]), "type": m[3], "file": m[4]})
        elif "=" in line:
            k, v = line.split("=", 1)
            info[k.strip()] = v.strip().strip('"')
    return info, doff * SECTOR, dsize * SECTOR


def patch_cid(path: Path, seed: str) -> int:
    """Replace the descriptor's CID with the seed's; returns the new CID.

    QEMU prints the CID without leading zeros, so the line's length varies: the
    descriptor text is rewritten in its NUL-padded area."""
    _info, off, length = read_descriptor(path)
    with open(path, "r+b") as f:
        f.seek(off)
        area = f.read(length)
        text = area.split(b"\0", 1)[0]
        cid = derived_cid(seed)
        new, n = _CID_RE.subn(b"CID=%08x" % cid, text, count=1)
        if n != 1:
            raise BadImageError(f"{path}: no CID line in the VMDK descriptor")
        if len(new) > length:
            raise BadImageError(f"{path}: the VMDK descriptor area is full")
        f.seek(off)
        f.write(new.ljust(length, b"\0"))
    return cid


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, seed: str,
            adapter_type: str = "lsilogic", compat6: bool = True, force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    if adapter_type not in ADAPTER_TYPES:
        raise BadImageError(f"vmdk: adapter type {adapter_type!r} is not one of {', '.join(ADAPTER_TYPES)}")
    size = raw_size(raw)
    check_limit(FORMAT, size, MAX_SIZE)
    with named_temp_output(dest, force=force) as tmp:
        write(raw, tmp, seed=seed, adapter_type=adapter_type, compat6=compat6)
    return Artifact(dest, FORMAT, size, patched=["descriptor CID"])


def write(raw: Path, out: Path, *, seed: str, adapter_type: str = "lsilogic", compat6: bool = True) -> None:
    """Convert into ``out`` (a path the caller owns; its name goes into the descriptor)."""
    qemu_img_convert(raw, out, "vmdk", {"subformat": "streamOptimized", "adapter_type": adapter_type,
                                        "compat6": compat6})
    patch_cid(out, seed)
