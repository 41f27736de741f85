"""Fixed VHD for Azure: the raw disk, rounded up to a whole MiB, followed by a 512-byte
"conectix" footer (so the file is N MiB + 512 bytes). A raw that is not a whole MiB is
padded with a hole and its backup GPT moved to the new end (``common.pad_disk``).

Two writers, byte-identical for the same raw, seed and epoch:

* ``direct`` (default): a sparse in-kernel copy of the raw (``copy_file_range`` of its
  data extents), the MiB padding as a hole, then the footer we build ourselves;
* ``qemu-img``: ``qemu-img convert -O vpc -o subformat=fixed,force_size``, then the
  footer's time stamp and UUID (random and wall-clock in QEMU's output) are replaced
  from the epoch and seed and its checksum recomputed.

The footer carries what QEMU writes with ``force_size`` (creator "qem2", which tells
readers to trust the current-size field, and the maximum CHS geometry) so both agree.
:func:`validate` checks any .vhd against Azure's upload rules.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadImageError
from ..image.disk import copy_sparse
from .common import (MiB, GiB, Artifact, check_limit, named_temp_output, pad_disk, qemu_img_convert,
                     raw_size, round_up, seed_uuid)

FORMAT = "vhd"
MAX_SIZE = 2040 * GiB  # the VHD format's limit (QEMU refuses more, Azure too)
FOOTER_SIZE = 512
COOKIE = b"conectix"
FEATURES_RESERVED = 0x00000002
FILE_FORMAT_VERSION = 0x00010000
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
DISK_TYPE_FIXED = 2
DISK_TYPES = {0: "none", 2: "fixed", 3: "dynamic", 4: "differencing"}
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, the VHD time stamp's origin
CREATOR_APP = b"qem2"
CREATOR_VERSION = 0x00050003
CREATOR_OS = b"Wi2k"
MAX_CHS = (65535, 16, 255)
METHODS = ("direct", "qemu-img")

# cookie, features, version, data offset, time stamp, creator app, creator version,
# creator host OS, original size, current size, cylinders, heads, sectors/track,
# disk type, checksum, unique id, saved state
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")


@dataclass(frozen=True)
class Footer:
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int
    geometry: tuple[int, int, int]
    disk_type: int
    checksum: int
    uuid: uuid.UUID
    saved_state: int
    cookie: bytes = COOKIE

    def pack(self, checksum: int | None = None) -> bytes:
        body = _FOOTER.pack(self.cookie, self.features, self.version, self.data_offset, self.timestamp,
                            self.creator_app, self.creator_version, self.creator_os,
                            self.original_size, self.current_size, *self.geometry, self.disk_type,
                            self.checksum if checksum is None else checksum, self.uuid.bytes,
                            self.saved_state)
        return body.ljust(FOOTER_SIZE, b"\0")


def footer_checksum(raw: bytes) -> int:
    """One's complement of the byte sum of the footer with its checksum field zeroed."""
    b = bytearray(raw[:FOOTER_SIZE])
    b[64:68] = b"\0\0\0\0"
    return ~sum(b) & 0xFFFFFFFF


def parse_footer(raw: bytes) -> Footer:
    if len(raw) < FOOTER_SIZE:
        raise BadImageError("VHD footer is shorter than 512 bytes")
    (cookie, features, version, data_offset, ts, app, app_ver, host_os, orig, cur, cyl, heads, spt,
     dtype, csum, uid, saved) = _FOOTER.unpack_from(raw)
    return Footer(features, version, data_offset, ts, app, app_ver, host_os, orig, cur,
                  (cyl, heads, spt), dtype, csum, uuid.UUID(bytes=uid), saved, cookie=cookie)


def vhd_timestamp(epoch: int) -> int:
    return min(max(epoch - VHD_EPOCH, 0), 0xFFFFFFFF)


def build_footer(size: int, *, seed: str, epoch: int) -> bytes:
    """The footer of a fixed VHD of ``size`` bytes (a whole number of MiB)."""
    f = Footer(FEATURES_RESERVED, FILE_FORMAT_VERSION, FIXED_DATA_OFFSET, vhd_timestamp(epoch),
               CREATOR_APP, CREATOR_VERSION, CREATOR_OS, size, size, MAX_CHS, DISK_TYPE_FIXED, 0,
               seed_uuid(seed, "vhd"), 0)
    unsummed = f.pack(0)
    return f.pack(footer_checksum(unsummed))


def patch_footer(path: Path, *, seed: str, epoch: int) -> None:
    """Replace time stamp and UUID in a VHD's footer (and its header copy at offset 0 in a
    dynamic VHD) and recompute the checksum."""
    size = path.stat().st_size
    offsets = [size - FOOTER_SIZE]
    with open(path, "r+b") as f:
        f.seek(0)
        if f.read(8) == COOKIE and size > FOOTER_SIZE:  # dynamic/differencing: footer copy at 0
            offsets.append(0)
        for off in offsets:
            f.seek(off)
            cur = bytearray(f.read(FOOTER_SIZE))
            if cur[:8] != COOKIE:
                raise BadImageError(f"{path}: no VHD footer at offset {off}")
            cur[24:28] = struct.pack(">I", vhd_timestamp(epoch))
            cur[68:84] = seed_uuid(seed, "vhd").bytes
            cur[64:68] = struct.pack(">I", footer_checksum(bytes(cur)))
            f.seek(off)
            f.write(cur)


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, seed: str, epoch: int,
            method: str = "direct", force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    if method not in METHODS:
        raise BadImageError(f"vhd: method {method!r} is not one of {', '.join(METHODS)}")
    size = raw_size(raw)
    virtual = round_up(size, MiB)
    check_limit(FORMAT, virtual, MAX_SIZE)
    with named_temp_output(dest, force=force) as tmp:
        if method == "direct":
            write_direct(raw, tmp, seed=seed, epoch=epoch)
        else:
            write_qemu(raw, tmp, seed=seed, epoch=epoch)
        ensure_valid(tmp)
    patched = ["footer time stamp", "footer unique id", "footer checksum"]
    return Artifact(dest, FORMAT, virtual, patched=patched if method == "qemu-img" else [])


def write_direct(raw: Path, out: Path, *, seed: str, epoch: int) -> None:
    size = raw.stat().st_size
    virtual = round_up(size, MiB)
    with open(raw, "rb") as src, open(out, "wb") as dst:
        copy_sparse(src, dst, 0, size, 0)
    pad_disk(out, virtual)
    with open(out, "r+b") as dst:
        dst.seek(virtual)
        dst.write(build_footer(virtual, seed=seed, epoch=epoch))


def write_qemu(raw: Path, out: Path, *, seed: str, epoch: int) -> None:
    """qemu-img's fixed VHD; a raw that is not MiB-aligned is first padded (in a sparse
    copy beside ``out``), as the direct writer does, so QEMU keeps the size."""
    size = raw.stat().st_size
    virtual = round_up(size, MiB)
    src = raw
    if virtual != size:
        src = out.with_name(out.name + ".padded.raw")
        with open(raw, "rb") as fi, open(src, "wb") as fo:
            copy_sparse(fi, fo, 0, size, 0)
        pad_disk(src, virtual)
    try:
        qemu_img_convert(src, out, "vpc", {"subformat": "fixed", "force_size": True})
    finally:
        if src != raw:
            src.unlink(missing_ok=True)
    patch_footer(out, seed=seed, epoch=epoch)


# --------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.field}: {self.message}"


def validate(path: str | os.PathLike[str]) -> list[Problem]:
    """Problems of a .vhd against Azure's rules for an uploaded VHD: a fixed disk, virtual
    size a whole MiB, file size = virtual size + 512, a valid footer (cookie, checksum,
    version, data offset) and at most 2040 GiB."""
    path = Path(path)
    out: list[Problem] = []
    size = path.stat().st_size
    if size < FOOTER_SIZE:
        return [Problem("file", f"{size} bytes: too small to hold a VHD footer")]
    with open(path, "rb") as f:
        f.seek(size - FOOTER_SIZE)
        raw = f.read(FOOTER_SIZE)
    ft = parse_footer(raw)
    if ft.cookie != COOKIE:
        return [Problem("footer.cookie", f"{ft.cookie!r}, expected {COOKIE!r} in the last 512 bytes")]
    want = footer_checksum(raw)
    if ft.checksum != want:
        out.append(Problem("footer.checksum", f"{ft.checksum:#010x}, computed {want:#010x}"))
    if ft.version != FILE_FORMAT_VERSION:
        out.append(Problem("footer.version", f"{ft.version:#010x}, expected {FILE_FORMAT_VERSION:#010x}"))
    if ft.disk_type != DISK_TYPE_FIXED:
        out.append(Problem("footer.disk_type",
                           f"{DISK_TYPES.get(ft.disk_type, ft.disk_type)}: Azure needs a fixed VHD"))
    elif ft.data_offset != FIXED_DATA_OFFSET:
        out.append(Problem("footer.data_offset", f"{ft.data_offset:#x}, a fixed VHD has 0xffffffffffffffff"))
    if size % MiB != FOOTER_SIZE:
        out.append(Problem("file", f"size {size} is not a whole number of MiB plus 512 bytes"))
    if ft.disk_type == DISK_TYPE_FIXED and ft.current_size != size - FOOTER_SIZE:
        out.append(Problem("footer.current_size",
                           f"{ft.current_size}, but the file holds {size - FOOTER_SIZE} bytes of disk"))
    if ft.current_size % MiB:
        out.append(Problem("footer.current_size", f"{ft.current_size} is not a whole number of MiB"))
    if ft.current_size > MAX_SIZE:
        out.append(Problem("footer.current_size", f"{ft.current_size} exceeds 2040 GiB"))
    if ft.original_size != ft.current_size:
        out.append(Problem("footer.original_size",
                           f"{ft.original_size} differs from current size {ft.current_size}", "warning"))
    return out


def ensure_valid(path: str | os.PathLike[str]) -> None:
    errors = [p for p in validate(path) if p.severity == "error"]
    if errors:
        raise BadImageError(f"{path}: not an Azure-ready VHD: {errors[0].field}: {errors[0].message}"
                            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
