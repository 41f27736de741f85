"""A read-only FAT12/16/32 reader for diffs: boot sector fields and every directory entry
with its times (creation to 10 ms, modification to 2 s, access date), attributes, first
cluster and content hash. The image is untrusted: cluster chains are bounded and checked
for loops, and every read stays inside the filesystem.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, BinaryIO

from ..errors import BadImageError

ATTR_RO, ATTR_HIDDEN, ATTR_SYSTEM, ATTR_VOLUME, ATTR_DIR, ATTR_ARCHIVE = 1, 2, 4, 8, 16, 32
ATTR_LFN = 0x0F
MAX_ENTRIES = 1 << 20


class FatFs:
    def __init__(self, f: BinaryIO, offset: int = 0, size: int | None = None, where: str = "FAT"):
        self.f, self.offset, self.where = f, offset, where
        bs = self._read(0, 512)
        if bs[510:512] != b"\x55\xaa":
            raise BadImageError(f"{where}: no FAT boot sector signature")
        (self.bytes_per_sector, self.sectors_per_cluster, self.reserved, self.nfats,
         self.root_entries, total16, self.media, fatsz16, _spt, _heads, self.hidden,
         total32) = struct.unpack_from("<HBHBHHBHHHII", bs, 11)
        if self.bytes_per_sector not in (512, 1024, 2048, 4096) or not self.sectors_per_cluster \
                or not self.nfats:
            raise BadImageError(f"{where}: implausible FAT geometry")
        self.fat_size = fatsz16 or struct.unpack_from("<I", bs, 36)[0]
        self.total = total16 or total32
        bps = self.bytes_per_sector
        root_sectors = (self.root_entries * 32 + bps - 1) // bps
        self.first_data = self.reserved + self.nfats * self.fat_size + root_sectors
        clusters = (self.total - self.first_data) // self.sectors_per_cluster
        self.kind = "FAT12" if clusters < 4085 else "FAT16" if clusters < 65525 else "FAT32"
        self.clusters = clusters
        self.cluster_size = bps * self.sectors_per_cluster
        self.size = size if size is not None else self.total * bps
        if self.kind == "FAT32":
            self.root_cluster = struct.unpack_from("<I", bs, 44)[0]
            ext = 64
        else:
            self.root_cluster = 0
            ext = 36
        self.boot = {
            "oem": bs[3:11].decode("latin-1").rstrip(), "type": self.kind,
            "bytes_per_sector": bps, "sectors_per_cluster": self.sectors_per_cluster,
            "reserved_sectors": self.reserved, "fats": self.nfats,
            "root_entries": self.root_entries, "total_sectors": self.total, "media": self.media,
            "fat_size": self.fat_size, "hidden_sectors": self.hidden,
            "volume_id": f"{struct.unpack_from('<I', bs, ext + 3)[0]:08X}",
            "volume_label": bs[ext + 7:ext + 18].decode("latin-1").rstrip(),
            "boot_code_sha256": hashlib.sha256(bs[ext + 26:510]).hexdigest(),
        }
        if self.kind == "FAT32":
            fsinfo = struct.unpack_from("<H", bs, 48)[0]
            if 0 < fsinfo < self.reserved:
                fi = self._read(fsinfo * bps, 512)
                if fi[:4] == b"RRaA":
                    free, nxt = struct.unpack_from("<II", fi, 488)
                    self.boot["fsinfo_free_clusters"] = free
                    self.boot["fsinfo_next_free"] = nxt
        self._fat = self._read(self.reserved * bps, self.fat_size * bps)

    def _read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or (hasattr(self, "size") and off + n > self.size):
            raise BadImageError(f"{self.where}: read outside the filesystem")
        self.f.seek(self.offset + off)
        data = self.f.read(n)
        if len(data) != n:
            raise BadImageError(f"{self.where}: short read")
        return data

    def _next(self, c: int) -> int:
        if self.kind == "FAT32":
            return struct.unpack_from("<I", self._fat, c * 4)[0] & 0x0FFFFFFF
        if self.kind == "FAT16":
            return struct.unpack_from("<H", self._fat, c * 2)[0]
        v = struct.unpack_from("<H", self._fat, c * 3 // 2)[0]
        return v >> 4 if c & 1 else v & 0xFFF

    def chain(self, first: int) -> list[int]:
        eoc = {"FAT12": 0xFF8, "FAT16": 0xFFF8, "FAT32": 0x0FFFFFF8}[self.kind]
        out: list[int] = []
        seen: set[int] = set()
        c = first
        while 2 <= c < eoc:
            if c in seen or c >= self.clusters + 2 or len(out) > self.clusters:
                raise BadImageError(f"{self.where}: bad cluster chain from {first}")
            seen.add(c)
            out.append(c)
            c = self._next(c)
        return out

    def _cluster(self, c: int) -> bytes:
        return self._read((self.first_data + (c - 2) * self.sectors_per_cluster)
                          * self.bytes_per_sector, self.cluster_size)

    def read_chain(self, first: int, size: int | None = None) -> bytes:
        data = b"".join(self._cluster(c) for c in self.chain(first))
        return data if size is None else data[:size]

    def _root(self) -> bytes:
        if self.kind == "FAT32":
            return self.read_chain(self.root_cluster)
        bps = self.bytes_per_sector
        return self._read((self.reserved + self.nfats * self.fat_size) * bps, self.root_entries * 32)

    @staticmethod
    def _time(date: int, time: int | None, tenths: int = 0) -> str:
        y, mo, d = 1980 + (date >> 9), (date >> 5) & 15, date & 31
        if time is None:
            return f"{y:04d}-{mo:02d}-{d:02d}"
        h, mi, s = time >> 11, (time >> 5) & 63, (time & 31) * 2
        ms = tenths * 10
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s + ms // 1000:02d}" + \
            (f".{ms % 1000:03d}" if ms % 1000 else "")

    def entries(self, data: bytes, parent: str, out: dict[str, dict[str, Any]], depth: int = 0) -> None:
        if depth > 64:
            raise BadImageError(f"{self.where}: directories nested too deep")
        lfn: dict[int, str] = {}
        for i in range(0, len(data) - 31, 32):
            e = data[i:i + 32]
            if e[0] == 0:
                break
            if e[0] == 0xE5:
                lfn = {}
                continue
            attr = e[11]
            if attr == ATTR_LFN:
                seq = e[0] & 0x1F
                part = (e[1:11] + e[14:26] + e[28:32]).decode("utf-16-le", errors="replace")
                lfn[seq] = part.split("\0", 1)[0].rstrip("\uffff")
                continue
            short = e[0:8].decode("latin-1").rstrip() + (
                "." + e[8:11].decode("latin-1").rstrip() if e[8:11].strip() else "")
            name = "".join(lfn[k] for k in sorted(lfn)) if lfn else short
            lfn = {}
            if attr & ATTR_VOLUME:
                out.setdefault("(volume label)", {"name": e[0:11].decode("latin-1").rstrip(),
                                                  "mtime": self._time(*struct.unpack_from("<HH", e, 24)[::-1])})
                continue
            if short in (".", ".."):
                continue
            if len(out) > MAX_ENTRIES:
                raise BadImageError(f"{self.where}: too many directory entries")
            ctenth, ctime, cdate, adate, hi, wtime, wdate, lo, size = struct.unpack_from(
                "<BHHHHHHHI", e, 13)
            first = (hi << 16 | lo) if self.kind == "FAT32" else lo
            path = f"{parent.rstrip('/')}/{name}"
            rec: dict[str, Any] = {
                "type": "directory" if attr & ATTR_DIR else "regular", "short_name": short,
                "attributes": f"0x{attr:02x}", "ctime": self._time(cdate, ctime, ctenth),
                "atime": self._time(adate, None), "mtime": self._time(wdate, wtime),
                "first_cluster": first,
            }
            if attr & ATTR_DIR:
                out[path] = rec
                if first:
                    self.entries(self.read_chain(first), path, out, depth + 1)
            else:
                rec["size"] = size
                content = self.read_chain(first, size) if first else b""
                if len(content) != size:
                    raise BadImageError(f"{self.where}: {path}: cluster chain shorter than its size")
                rec["sha256"] = hashlib.sha256(content).hexdigest()
                out[path] = rec

    def listing(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {"/": {"type": "directory"}}
        self.entries(self._root(), "/", out)
        return out
