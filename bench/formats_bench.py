#!/usr/bin/env python3
"""Cloud format conversions: each of imagebuilder's converters against ``qemu-img convert``
of the same raw to the same format, in the same run (ratio; target <= 1.1).

The raw is a 4 GiB sparse GPT disk with DATA MiB (default 512) of real file contents
(from /usr) in 64 MiB pieces spread over the disk, or ``--raw PATH`` (e.g. a built Debian
image). Baselines:

Every baseline output is fsync'ed, as imagebuilder's outputs are (temp file, fsync, rename).

* qcow2, vmdk, vhdx, vhd: ``qemu-img convert -f raw -O FMT`` with the same options
  (vhd: ``vpc subformat=fixed,force_size``); ova against the stream-optimized vmdk alone;
* disk speed: ``qemu-img convert -O raw`` (a sparse copy) -- fixed VHD and the GCE
  tarball are stated against it, and GCE also against the classic
  ``tar --format=oldgnu -Sczf`` (GNU tar + single-threaded gzip).

Each pair runs alternately, ``--repeat`` times (best of). Prints a table, writes
``bench/results/formats.json``. Runnable directly or through ``bench/run.py formats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "formats.json"
sys.path.insert(0, str(REPO))

MiB, GiB = 1 << 20, 1 << 30
SEED, EPOCH = "bench", 1700000000
TARGET = 1.1


def make_raw(path: Path, size: int, data_mib: int) -> None:
    """A sparse GPT disk holding ``data_mib`` MiB of file contents from /usr."""
    from imagebuilder.disk.gpt import LINUX_FS, Partition, Table, write_gpt

    with open(path, "wb") as f:
        f.truncate(size)
    total = size // 512
    write_gpt(path, Table(uuid.UUID(int=1), 512, total,
                          (Partition(1, LINUX_FS, uuid.UUID(int=2), 2048, total - 35, "root"),)))
    pieces = max(1, data_mib // 64)
    stride = (size - 2 * MiB) // pieces
    files = (p for root in ("/usr/lib", "/usr/bin", "/usr/share") for p in sorted(Path(root).rglob("*"))
             if p.is_file() and not p.is_symlink())
    with open(path, "r+b") as out:
        for i in range(pieces):
            out.seek(MiB + i * stride)
            left = 64 * MiB
            while left > 0:
                try:
                    chunk = next(files).read_bytes()[:left]
                except (OSError, PermissionError):
                    continue
                except StopIteration:
                    chunk = os.urandom(min(left, MiB))
                out.write(chunk)
                left -= len(chunk)


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def qemu(raw: Path, dest: Path, fmt: str, opts: str | None = None) -> None:
    """The baseline, fsync'ed like every imagebuilder output (durability rule)."""
    argv = ["qemu-img", "convert", "-f", "raw", "-O", fmt]
    if opts:
        argv += ["-o", opts]
    subprocess.run([*argv, str(raw), str(dest)], check=True)
    fsync(dest)


def classic_gce(raw: Path, dest: Path, work: Path) -> None:
    d = work / "classic"
    d.mkdir(exist_ok=True)
    link = d / "disk.raw"
    if not link.exists():
        link.symlink_to(raw.resolve())
    subprocess.run(["tar", "--format=oldgnu", "-Sczhf", str(dest), "-C", str(d), "disk.raw"], check=True)
    fsync(dest)


def main(argv: list[str] | None = None) -> list[dict]:
    from imagebuilder import formats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, help="an existing raw disk image (default: a synthetic 4 GiB one)")
    ap.add_argument("--data", type=int, default=512, help="MiB of data in the synthetic raw")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--formats", default="qcow2,vmdk,vhd,vhdx,gce,ova")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args(argv if argv is not None else [])
    work = Path(tempfile.mkdtemp(prefix="formats-bench-", dir=args.workdir))
    rows: list[dict] = []
    detail: dict = {}
    try:
        raw = args.raw
        if raw is None:
            raw = work / "bench.raw"
            make_raw(raw, 4 * GiB, args.data)
        data_bytes = os.stat(raw).st_blocks * 512
        print(f"raw: {raw} ({os.path.getsize(raw) / GiB:.1f} GiB, {data_bytes / MiB:.0f} MiB allocated)")
        subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        def ours(fmt: str):
            def go():
                dest = work / formats.file_name("bench", fmt)
                dest.unlink(missing_ok=True)
                formats.convert(fmt, raw, dest, seed=SEED, epoch=EPOCH, name="bench")
            return go

        def base(fmt: str, opts: str | None = None):
            def go():
                dest = work / f"baseline.{fmt}"
                dest.unlink(missing_ok=True)
                qemu(raw, dest, fmt, opts)
            return go

        pairs = {
            "qcow2": (ours("qcow2"), base("qcow2", "compat=1.1"), "qemu-img convert -O qcow2"),
            "vmdk": (ours("vmdk"), base("vmdk", "subformat=streamOptimized,adapter_type=lsilogic,compat6"),
                     "qemu-img convert -O vmdk (streamOptimized)"),
            "vhd": (ours("vhd"), base("vpc", "subformat=fixed,force_size"), "qemu-img convert -O vpc (fixed)"),
            "vhdx": (ours("vhdx"), base("vhdx", "subformat=dynamic"), "qemu-img convert -O vhdx"),
            "ova": (ours("ova"), base("vmdk", "subformat=streamOptimized,adapter_type=lsilogic,compat6"),
                    "qemu-img convert -O vmdk (streamOptimized)"),
            "gce": (ours("gce"), lambda: classic_gce(raw, work / "classic.tar.gz", work),
                    "tar --format=oldgnu -Sczf (gzip)"),
        }
        disk_speed = base("raw")
        wanted = [f for f in args.formats.split(",") if f]
        best_disk = min(timed(disk_speed) for _ in range(args.repeat))
        (work / "baseline.raw").unlink(missing_ok=True)
        detail["disk_speed_s"] = best_disk
        rows.append({"metric": "disk speed: qemu-img convert -O raw (s)", "value": round(best_disk, 2),
                     "unit": "s"})
        for fmt in wanted:
            mine, theirs, label = pairs[fmt]
            t_ours, t_base = [], []
            for _ in range(args.repeat):
                t_base.append(timed(theirs))
                t_ours.append(timed(mine))
            a, b = min(t_ours), min(t_base)
            detail[fmt] = {"ours_s": a, "baseline_s": b, "baseline": label}
            print(f"{fmt:6} ours {a:7.2f} s   {label}: {b:7.2f} s   ratio {a / b:.2f}", flush=True)
            rows.append({"metric": f"{fmt} / {label}", "value": round(a / b, 3), "unit": "x",
                         "target": f"<= {TARGET}" if fmt != "gce" else "", "ok": a / b <= TARGET if fmt != "gce" else None})
            if fmt in ("vhd", "gce"):
                rows.append({"metric": f"{fmt} / disk speed (qemu-img convert -O raw)", "value": round(a / best_disk, 3),
                             "unit": "x", "ok": None})
            for p in work.iterdir():
                if p.is_file() and p != raw:
                    p.unlink()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"raw": str(args.raw or "synthetic"), "data_mib": data_bytes // MiB,
                                       "load": os.getloadavg(), "detail": detail, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in main(sys.argv[1:]):
        print(f"{r['metric']:60} {r['value']:>8} {r.get('unit', '')} {r.get('target', '')}")
