"""ISO9660 volume descriptors and directory records, field by field, for diffs.

Built on :mod:`imagebuilder.iso.iso9660` (descriptors, bounds-checked reads); the directory
records are decoded here in full (recording date, flags, extent, and the Rock Ridge PX/TF/NM/SL
entries of the System Use area, following CE continuations) because a diff needs every field,
not just the ones a lookup does. Paths use the Rock Ridge name where there is one.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from ..errors import BadImageError
from ..iso.iso9660 import SECTOR_SIZE, IsoFS

_MAX_DIR = 64 << 20
_MAX_RECORDS = 1 << 20


def _dt17(b: bytes) -> str:
    """A volume descriptor date (17 bytes: 16 digits + GMT offset in 15-minute units)."""
    digits = b[:16].decode("latin-1")
    if not digits.strip("0 \0"):
        return "unset"
    off = struct.unpack("b", b[16:17])[0] * 15
    return (f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:"
            f"{digits[12:14]}.{digits[14:16]}{off:+05d}min")


def _dt7(b: bytes) -> str:
    """A directory record date (7 bytes)."""
    y, mo, d, h, mi, s, off = struct.unpack("BBBBBBb", b[:7])
    return f"{1900 + y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{off * 15:+05d}min"


def descriptors(fs: IsoFS) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(64):
        sec = fs.pread((16 + i) * SECTOR_SIZE, SECTOR_SIZE)
        t = sec[0]
        key = f"descriptor {16 + i}"
        if t == 255:
            out[key] = {"type": "terminator"}
            break
        if t == 0:
            out[key] = {"type": "boot record", "system": sec[7:39].decode("latin-1").rstrip("\0 "),
                        "catalog_sector": struct.unpack_from("<I", sec, 71)[0]}
            continue
        if t in (1, 2):
            s = lambda a, b: sec[a:b].decode("latin-1").rstrip(" \0")  # noqa: E731
            out[key] = {
                "type": "primary" if t == 1 else "supplementary",
                "system_id": s(8, 40), "volume_id": s(40, 72),
                "volume_space_size": struct.unpack_from("<I", sec, 80)[0],
                "escape_sequences": sec[88:120].hex() if t == 2 else "",
                "volume_set_id": s(190, 318), "publisher_id": s(318, 446),
                "preparer_id": s(446, 574), "application_id": s(574, 702),
                "copyright_file": s(702, 739), "abstract_file": s(739, 776),
                "bibliographic_file": s(776, 813),
                "creation": _dt17(sec[813:830]), "modification": _dt17(sec[830:847]),
                "expiration": _dt17(sec[847:864]), "effective": _dt17(sec[864:881]),
                "path_table_size": struct.unpack_from("<I", sec, 132)[0],
                "root_extent": struct.unpack_from("<I", sec, 158)[0],
                "root_date": _dt7(sec[174:181]),
                "application_use_sha256": hashlib.sha256(sec[883:1395]).hexdigest(),
            }
            continue
        out[key] = {"type": f"unknown ({t})", "sha256": hashlib.sha256(sec).hexdigest()}
    return out


def _susp(fs: IsoFS, area: bytes, rec: dict[str, Any], depth: int = 0) -> None:
    """Rock Ridge fields of one System Use area (CE continuations followed, bounded)."""
    pos = 0
    names: list[str] = []
    link: list[str] = []
    while pos + 4 <= len(area):
        sig, ln, _ver = area[pos:pos + 2], area[pos + 2], area[pos + 3]
        if ln < 4 or pos + ln > len(area):
            break
        body = area[pos + 4:pos + ln]
        if sig == b"PX" and len(body) >= 32:
            mode, nlink, uid, gid = (struct.unpack_from("<I", body, o)[0] for o in (0, 8, 16, 24))
            rec["mode"], rec["links"], rec["uid"], rec["gid"] = f"{mode:o}", nlink, uid, gid
            if len(body) >= 40:
                rec["rr_ino"] = struct.unpack_from("<I", body, 32)[0]
        elif sig == b"TF" and body:
            flags = body[0]
            long_form = bool(flags & 0x80)
            size = 17 if long_form else 7
            p = 1
            for bit, name in enumerate(("rr_ctime_creation", "rr_mtime", "rr_atime", "rr_ctime",
                                        "rr_backup", "rr_expiration", "rr_effective")):
                if flags & (1 << bit) and p + size <= len(body):
                    rec[name] = (_dt17 if long_form else _dt7)(body[p:p + size])
                    p += size
        elif sig == b"NM" and body:
            names.append(body[1:].decode("utf-8", errors="replace"))
        elif sig == b"SL" and body:
            q = 1
            while q + 2 <= len(body):
                cflags, clen = body[q], body[q + 1]
                comp = body[q + 2:q + 2 + clen].decode("utf-8", errors="replace")
                link.append("." if cflags & 2 else ".." if cflags & 4 else "/" if cflags & 8 else comp)
                q += 2 + clen
        elif sig == b"CE" and len(body) >= 24 and depth < 8:
            blk, off, n = (struct.unpack_from("<I", body, o)[0] for o in (0, 8, 16))
            if n <= SECTOR_SIZE:
                _susp(fs, fs.pread(blk * SECTOR_SIZE + off, n), rec, depth + 1)
        elif sig == b"ST":
            break
        pos += ln
    if names:
        rec["rr_name"] = "".join(names)
    if link:
        rec["rr_symlink"] = "/".join(link).replace("//", "/")


def listing(fs: IsoFS, *, contents: bool = True) -> dict[str, dict[str, Any]]:
    """{path: {iso_name, extent, size, date, flags, mode?, uid?, gid?, links?, rr_* times,
    rr_symlink?, sha256?}} for every record under the primary volume's root."""
    assert fs.root is not None
    out: dict[str, dict[str, Any]] = {}
    todo = [("/", fs.root.extent, fs.root.size, 0)]
    while todo:
        path, extent, size, depth = todo.pop()
        if size > _MAX_DIR or depth > 64:
            raise BadImageError(f"{fs.path}: directory {path} is implausible")
        buf = fs.pread(extent * SECTOR_SIZE, size)
        pos = 0
        while pos < len(buf):
            ln = buf[pos]
            if ln == 0:
                pos = (pos // SECTOR_SIZE + 1) * SECTOR_SIZE
                continue
            if ln < 34 or pos + ln > len(buf):
                raise BadImageError(f"{fs.path}: bad directory record in {path}")
            r = buf[pos:pos + ln]
            name_len = r[32]
            raw = r[33:33 + name_len]
            su_start = 33 + name_len + (0 if name_len % 2 else 1)
            rec: dict[str, Any] = {
                "extent": struct.unpack_from("<I", r, 2)[0],
                "size": struct.unpack_from("<I", r, 10)[0],
                "date": _dt7(r[18:25]), "flags": f"0x{r[25]:02x}",
            }
            _susp(fs, r[su_start:], rec)
            pos += ln
            if name_len == 1 and raw[0] in (0, 1):
                if raw[0] == 0:  # "." : the directory's own record, as stored in its extent
                    me = out.setdefault(path, {"type": "directory"})
                    me.update({k: v for k, v in rec.items() if k not in ("extent", "size")})
                continue
            if len(out) > _MAX_RECORDS:
                raise BadImageError(f"{fs.path}: too many directory records")
            rec["iso_name"] = raw.decode("latin-1")
            name = rec.get("rr_name") or rec["iso_name"].split(";")[0].rstrip(".")
            child = f"{path.rstrip('/')}/{name}"
            is_dir = bool(r[25] & 2)
            rec["type"] = "directory" if is_dir else ("symlink" if "rr_symlink" in rec else "regular")
            prev = out.get(child)
            if prev is not None and not is_dir and prev.get("type") == "regular":
                # a multi-extent file: one record per extent, in order
                prev["size"] += rec["size"]
                prev["parts"].append((rec["extent"], rec["size"]))
                continue
            if not is_dir:
                rec["parts"] = [(rec["extent"], rec["size"])]
            out[child] = {**out.get(child, {}), **rec}
            if is_dir:
                todo.append((child, rec["extent"], rec["size"], depth + 1))
    for rec in out.values():
        parts = rec.pop("parts", [])
        if contents and rec.get("type") == "regular":
            h = hashlib.sha256()
            for ext, left in parts:
                off = ext * SECTOR_SIZE
                while left > 0:
                    n = min(left, 4 << 20)
                    h.update(fs.pread(off, n))
                    off += n
                    left -= n
            rec["sha256"] = h.hexdigest()
    return out
