"""``imagebuilder diff A B``: why two builds (or two images) differ, top-down.

1. OUTDIRs: meta.json and manifest.json field by field (``build.*`` is volatile — timings,
   cache hits — and reported apart, not counted), then each artifact pair.
2. Images (raw, or any format qemu-img reads: converted to a temporary sparse raw first;
   when only the container differs that is said): the bytes are compared in 4 KiB blocks and
   every differing block is attributed to a region — protective MBR, primary/backup GPT,
   a partition, a gap. The GPTs are compared field by field (our GPT reader).
3. Each partition that differs: its filesystem's metadata (ext4: ``dumpe2fs -h``; vfat: the
   boot sector; xfs: ``xfs_db`` superblock), then its files — added, removed, or changed with
   the field (type, mode, owner, size, content sha256, symlink target, xattrs, mtime, ctime,
   atime, crtime, inode number, block map, ...). ext4 through debugfs, vfat through our FAT
   reader; nothing is mounted.
4. ISO images: every volume descriptor field (dates, ids), then every directory record
   (ISO9660 date, flags, extent; Rock Ridge mode/owner/times/name/link) and file content.

Each difference is one :class:`Difference` (where, field, a, b); two inputs are identical
when there are none (volatile ones aside).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import BadImageError, ImageBuilderError, UserInputError
from .outdir import META, MANIFEST, SBOM, OutDir

BLOCK = 4096
CHUNK = 1 << 20
# the order fields are reported in (what a build controls first, layout last)
FILE_FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "rr_symlink", "links",
               "xattrs", "attributes", "short_name", "mtime", "ctime", "atime", "crtime",
               "date", "rr_mtime", "rr_ctime", "rr_atime", "rr_ctime_creation", "flags",
               "generation", "iso_name", "inode", "rr_ino", "first_cluster", "extent", "blocks")
VOLATILE_META = ("build",)


@dataclass
class Difference:
    where: str
    field: str
    a: Any = None
    b: Any = None

    def line(self) -> str:
        if self.field in ("added", "removed", "only in A", "only in B"):
            return f"{self.where}: {self.field}"
        if self.field == "bytes":
            return f"{self.where}: {self.a}"
        return f"{self.where}: {self.field}: {_short(self.a)} -> {_short(self.b)}"

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "field": self.field, "a": self.a, "b": self.b}


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 120 else s[:117] + "..."


@dataclass
class DiffReport:
    a: str
    b: str
    differences: list[Difference] = field(default_factory=list)
    volatile: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences

    def add(self, where: str, fld: str, a: Any = None, b: Any = None) -> None:
        self.differences.append(Difference(where, fld, a, b))

    def summary(self) -> dict[tuple[str, str], int]:
        """{(filesystem or document, field): how many entries differ in it}."""
        out: dict[tuple[str, str], int] = {}
        for d in self.differences:
            top = d.where.split(": /", 1)[0] if ": /" in d.where else d.where
            fld = d.field if ": /" in d.where else d.field.split(".", 1)[0].split("[", 1)[0]
            out[(top, fld)] = out.get((top, fld), 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical,
                "summary": [{"where": w, "field": f, "count": n}
                            for (w, f), n in self.summary().items()],
                "differences": [d.to_dict() for d in self.differences],
                "volatile": [d.to_dict() for d in self.volatile], "notes": self.notes}

    def render(self) -> str:
        if self.identical:
            return "identical\n"
        lines = [d.line() for d in self.differences]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"summary: {where}: {fld} differs in {n} entr{'y' if n == 1 else 'ies'}"
                  for (where, fld), n in self.summary().items()]
        lines.append(f"different: {len(self.differences)} difference"
                     f"{'s' * (len(self.differences) != 1)} between {self.a} and {self.b}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON documents


def diff_json(a: Any, b: Any, where: str, path: str = "") -> Iterator[Difference]:
    """Leaf-by-leaf differences of two JSON values (dict keys by name, lists by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                yield Difference(where, sub, None, b[k])
            elif k not in b:
                yield Difference(where, sub, a[k], None)
            else:
                yield from diff_json(a[k], b[k], where, sub)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a):
                yield Difference(where, sub, None, b[i])
            elif i >= len(b):
                yield Difference(where, sub, a[i], None)
            else:
                yield from diff_json(a[i], b[i], where, sub)
    elif a != b or type(a) is not type(b):
        yield Difference(where, path or "(document)", a, b)


# --------------------------------------------------------------------------- bytes


def block_diff(pa: Path, pb: Path) -> list[tuple[int, int]]:
    """Runs (offset, length) of differing BLOCK-sized blocks of two files (a longer file's
    tail counts as differing)."""
    runs: list[tuple[int, int]] = []

    def add(off: int, n: int) -> None:
        if runs and runs[-1][0] + runs[-1][1] == off:
            runs[-1] = (runs[-1][0], runs[-1][1] + n)
        else:
            runs.append((off, n))

    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        off = 0
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if not ca and not cb:
                break
            if ca != cb:
                for i in range(0, max(len(ca), len(cb)), BLOCK):
                    if ca[i:i + BLOCK] != cb[i:i + BLOCK]:
                        add(off + i, min(BLOCK, max(len(ca), len(cb)) - i))
            off += max(len(ca), len(cb))
    return runs


def _count_in(runs: list[tuple[int, int]], start: int, end: int) -> tuple[int, int | None]:
    """(differing bytes of blocks within [start, end), first differing offset)."""
    n, first = 0, None
    for off, ln in runs:
        lo, hi = max(off, start), min(off + ln, end)
        if lo < hi:
            n += hi - lo
            first = lo if first is None else first
    return n, first


def _is_iso(p: Path) -> bool:
    with open(p, "rb") as f:
        f.seek(32769)
        return f.read(5) == b"CD001"


@contextlib.contextmanager
def as_raw(p: Path, td: Path, tag: str) -> Iterator[tuple[Path, str]]:
    """The image as a raw file (itself, or a temporary conversion) and its format."""
    from ..image.disk import detect_format

    fmt = detect_format(p)
    if fmt == "raw":
        yield p, fmt
        return
    from ..image import qemuimg

    out = td / f"{tag}.raw"
    qemuimg.extract(p, fmt, out)
    try:
        yield out, fmt
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------- filesystems


def diff_listings(la: dict[str, dict[str, Any]], lb: dict[str, dict[str, Any]], where: str,
                  rep: DiffReport) -> None:
    for path in sorted(set(la) | set(lb)):
        if path not in lb:
            rep.add(f"{where}: {path}", "removed")
            continue
        if path not in la:
            rep.add(f"{where}: {path}", "added")
            continue
        ra, rb = la[path], lb[path]
        keys = [k for k in FILE_FIELDS if k in ra or k in rb]
        keys += sorted(k for k in set(ra) | set(rb) if k not in FILE_FIELDS)
        for k in keys:
            if ra.get(k) != rb.get(k):
                rep.add(f"{where}: {path}", k, ra.get(k), rb.get(k))


def _diff_fields(fa: dict[str, Any], fb: dict[str, Any], where: str, rep: DiffReport) -> None:
    for k in sorted(set(fa) | set(fb)):
        if fa.get(k) != fb.get(k):
            rep.add(where, k, fa.get(k), fb.get(k))


def _xfs_superblock(p: Path, offset: int, size: int, td: Path, tag: str) -> dict[str, str]:
    from ..image import qemuimg
    from ..run import run

    part = td / f"{tag}.xfs"
    qemuimg.extract(p, "raw", part, offset, size)  # xfs_db has no offset option
    try:
        out = run(["xfs_db", "-r", "-c", "sb 0", "-c", "print", str(part)]).stdout.decode()
    finally:
        part.unlink(missing_ok=True)
    return dict((k.strip(), v.strip()) for k, _, v in
                (ln.partition("=") for ln in out.splitlines()) if k.strip())


def diff_filesystem(pa: Path, pb: Path, offset_a: int, offset_b: int, size: int, where: str,
                    rep: DiffReport, td: Path) -> None:
    from ..image.disk import probe_fs

    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        fa.seek(offset_a)
        fb.seek(offset_b)
        ia, ib = probe_fs(fa.read(65536)), probe_fs(fb.read(65536))
    if ia.type != ib.type:
        rep.add(where, "filesystem type", ia.type, ib.type)
        return
    kind = ia.type
    w = f"{where} ({kind})" if kind else where
    if kind in ("ext2", "ext3", "ext4"):
        from . import ext4list

        _diff_fields(ext4list.superblock(pa, offset_a), ext4list.superblock(pb, offset_b),
                     f"{w} superblock", rep)
        diff_listings(ext4list.listing(pa, offset_a, tmpdir=str(td)),
                      ext4list.listing(pb, offset_b, tmpdir=str(td)), w, rep)
    elif kind == "vfat":
        from .fat import FatFs

        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            xa, xb = FatFs(fa, offset_a, size, str(pa)), FatFs(fb, offset_b, size, str(pb))
            _diff_fields(xa.boot, xb.boot, f"{w} boot sector", rep)
            diff_listings(xa.listing(), xb.listing(), w, rep)
    elif kind == "xfs":
        _diff_fields(_xfs_superblock(pa, offset_a, size, td, "a"),
                     _xfs_superblock(pb, offset_b, size, td, "b"), f"{w} superblock", rep)
        rep.notes.append(f"{w}: xfs files are not listed (only the superblock is compared)")


def diff_iso(pa: Path, pb: Path, where: str, rep: DiffReport) -> None:
    from ..iso.iso9660 import open_iso
    from . import isolist

    with open_iso(pa) as fa, open_iso(pb) as fb:
        da, db = isolist.descriptors(fa), isolist.descriptors(fb)
        for key in sorted(set(da) | set(db)):
            if key not in db or key not in da:
                rep.add(f"{where}: {key}", "only in A" if key in da else "only in B")
            else:
                _diff_fields(da[key], db[key], f"{where}: {key}", rep)
        diff_listings(isolist.listing(fa), isolist.listing(fb), where, rep)


def diff_images(pa: Path, pb: Path, where: str, rep: DiffReport) -> None:
    """Explain how two image files differ (nothing is added when they are identical)."""
    if _same_file_bytes(pa, pb):
        return
    with tempfile.TemporaryDirectory(prefix="imagebuilder-diff-") as tds:
        td = Path(tds)
        with as_raw(pa, td, "a") as (ra, fa), as_raw(pb, td, "b") as (rb, fb):
            if fa != fb:
                rep.add(where, "format", fa, fb)
            if (fa != "raw" or fb != "raw") and _same_file_bytes(ra, rb):
                rep.add(where, "bytes", f"the {fa}/{fb} containers differ, the disk contents "
                                        "are identical")
                return
            _diff_raw(ra, rb, where, rep, td)


def _same_file_bytes(pa: Path, pb: Path) -> bool:
    if pa.stat().st_size != pb.stat().st_size:
        return False
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        while True:
            ca = fa.read(CHUNK)
            if ca != fb.read(CHUNK):
                return False
            if not ca:
                return True


def _diff_raw(pa: Path, pb: Path, where: str, rep: DiffReport, td: Path) -> None:
    from ..disk.gpt import read_gpt

    sa, sb = pa.stat().st_size, pb.stat().st_size
    if sa != sb:
        rep.add(where, "size", sa, sb)
    runs = block_diff(pa, pb)
    if _is_iso(pa) and _is_iso(pb):
        n, first = _count_in(runs, 0, 32768)
        if n:
            rep.add(f"{where}: system area", "bytes",
                    f"{n} bytes in differing 4 KiB blocks of the first 32 KiB (MBR/GPT/boot code)")
        diff_iso(pa, pb, where, rep)
        return
    tables = []
    for p in (pa, pb):
        try:
            tables.append(read_gpt(p))
        except ImageBuilderError:
            tables.append(None)
    ta, tb = tables
    if ta is None or tb is None:
        if (ta is None) != (tb is None):
            rep.add(where, "partition table", "GPT" if ta else None, "GPT" if tb else None)
        # a bare filesystem (e.g. a partition image) or an unknown format
        before = len(rep.differences)
        diff_filesystem(pa, pb, 0, 0, min(sa, sb), where, rep, td)
        if len(rep.differences) == before:
            n, first = _count_in(runs, 0, max(sa, sb))
            rep.add(where, "bytes", f"{n} bytes in differing 4 KiB blocks, first at offset {first}")
        return
    da, db = ta.to_dict(), tb.to_dict()
    pa_parts = {p["number"]: p for p in da.pop("partitions")}
    pb_parts = {p["number"]: p for p in db.pop("partitions")}
    _diff_fields(da, db, f"{where}: partition table", rep)
    ss = ta.sector_size
    regions = [("protective MBR", 0, ss), ("primary GPT", ss, ta.first_usable_lba * ss),
               ("backup GPT", (ta.last_usable_lba + 1) * ss, ta.size_bytes)]
    covered = [(r[1], r[2]) for r in regions]
    for n in sorted(set(pa_parts) | set(pb_parts)):
        pa_, pb_ = pa_parts.get(n), pb_parts.get(n)
        label = f"{where}: partition {n}" + (f" ({(pa_ or pb_)['name']})" if (pa_ or pb_)["name"] else "")
        if pa_ is None or pb_ is None:
            rep.add(label, "only in A" if pb_ is None else "only in B")
            continue
        _diff_fields({k: v for k, v in pa_.items() if k != "number"},
                     {k: v for k, v in pb_.items() if k != "number"}, f"{label} GPT entry", rep)
        covered.append((pa_["offset"], pa_["offset"] + pa_["size"]))
        nbytes, first = _count_in(runs, pa_["offset"], pa_["offset"] + pa_["size"])
        if not nbytes and pa_["offset"] == pb_["offset"]:
            continue
        before = len(rep.differences)
        try:
            diff_filesystem(pa, pb, pa_["offset"], pb_["offset"], min(pa_["size"], pb_["size"]),
                            label, rep, td)
        except ImageBuilderError as e:
            rep.notes.append(f"{label}: filesystem not compared: {e.message}")
        if len(rep.differences) == before:
            rep.add(label, "bytes", f"{nbytes} bytes in differing 4 KiB blocks, first at offset "
                                    f"{first - pa_['offset'] if first is not None else '-'} "
                                    "of the partition")
    for name, lo, hi in regions:
        nbytes, first = _count_in(runs, lo, hi)
        if nbytes:
            rep.add(f"{where}: {name}", "bytes", f"{nbytes} bytes in differing 4 KiB blocks")
    covered.sort()
    gap_bytes = 0
    pos = 0
    for lo, hi in covered + [(max(sa, sb), max(sa, sb))]:
        if lo > pos:
            gap_bytes += _count_in(runs, pos, lo)[0]
        pos = max(pos, hi)
    if gap_bytes:
        rep.add(f"{where}: outside the partitions", "bytes",
                f"{gap_bytes} bytes in differing 4 KiB blocks")


# --------------------------------------------------------------------------- entry point


def _kind(p: Path) -> str:
    if p.is_dir():
        if not (p / META).is_file():
            raise UserInputError(f"{p}: a directory without {META} (expected a build's output "
                                 "directory or an image file)")
        return "outdir"
    if p.is_file():
        return "image"
    raise UserInputError(f"{p}: not found")


def diff_outdirs(a: OutDir, b: OutDir, rep: DiffReport) -> None:
    for d in diff_json(a.meta, b.meta, META):
        top = d.field.split(".", 1)[0].split("[", 1)[0]
        (rep.volatile if top in VOLATILE_META else rep.differences).append(d)
    rep.differences += list(diff_json(a.manifest, b.manifest, MANIFEST))
    if (a.path / SBOM).is_file() or (b.path / SBOM).is_file():
        from .outdir import load_json

        rep.differences += list(diff_json(load_json(a.path / SBOM, required=False),
                                          load_json(b.path / SBOM, required=False), SBOM))
    arts_a = {x.name: x for x in a.artifacts()}
    arts_b = {x.name: x for x in b.artifacts()}
    pairs: list[tuple[str, str]] = [(n, n) for n in sorted(set(arts_a) & set(arts_b))]
    only_a = sorted(set(arts_a) - set(arts_b))
    only_b = sorted(set(arts_b) - set(arts_a))
    if len(only_a) == 1 and len(only_b) == 1:  # e.g. two image names: compare them anyway
        pairs.append((only_a[0], only_b[0]))
        only_a = only_b = []
    for n in only_a:
        rep.add(n, "only in A")
    for n in only_b:
        rep.add(n, "only in B")
    from .outdir import safe_name

    for na, nb in pairs:
        if not (safe_name(na) and safe_name(nb)):
            rep.notes.append(f"artifact {na!r}/{nb!r}: not a plain file name, not compared")
            continue
        fa, fb = a.path / na, b.path / nb
        if not fa.is_file() or not fb.is_file():
            rep.add(na if na == nb else f"{na} / {nb}", "missing",
                    fa.is_file() or None, fb.is_file() or None)
            continue
        diff_images(fa, fb, na if na == nb else f"{na} / {nb}", rep)


def diff_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> DiffReport:
    pa, pb = Path(a), Path(b)
    ka, kb = _kind(pa), _kind(pb)
    if ka != kb:
        raise UserInputError(f"cannot compare a {ka} ({pa}) with an {kb} ({pb})",
                             hint="give two build output directories or two image files")
    rep = DiffReport(str(pa), str(pb))
    if ka == "outdir":
        diff_outdirs(OutDir.load(pa), OutDir.load(pb), rep)
    else:
        try:
            diff_images(pa, pb, pa.name if pa.name == pb.name else "image", rep)
        except PermissionError as e:
            raise UserInputError(f"{e.filename}: permission denied") from None
    return rep


__all__ = ["BadImageError", "DiffReport", "Difference", "diff_images", "diff_json",
           "diff_paths", "MANIFEST"]
