#!/usr/bin/env python3
"""LUKS2 encryption speed: our streaming writer vs ``cryptsetup reencrypt --encrypt``.

One ext4 image of ``IMAGEBUILDER_BENCH_LUKS_MIB`` MiB (default 512) made with
``mkfs.ext4 -d`` from a tree holding random data in about a third of it; the rest of
the image is holes. Measured in one run, so the ratio compares like with like:

* ``encrypt_image`` (ours; holes are read as zeros without I/O but still encrypted),
  wall time and MB/s of payload, the output fsync'ed as the builder does;
* ``decrypt_image`` (ours) back to a plain image (checked equal);
* CPU time next to wall time (ours: this process; cryptsetup: its child), since on a
  shared machine the CPU-time ratio is the steadier figure;
* the baseline: ``cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 32M
  --sector-size 4096 --force-offline-reencrypt`` on a copy of the image (userspace crypto,
  no device-mapper; needs root for its lock directory), then ``sync``.

Both use PBKDF2 with 1000 iterations so the key derivation does not weigh in.
Each timing is the median of ``REPEAT`` runs. Writes ``bench/results/luks.json``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "luks.json"
SIZE_MIB = int(os.environ.get("IMAGEBUILDER_BENCH_LUKS_MIB", "512"))
REPEAT = int(os.environ.get("IMAGEBUILDER_BENCH_REPEAT", "3"))
PASS = b"bench passphrase"


def _mkfs(work: Path) -> Path:
    tree = work / "tree"
    tree.mkdir()
    left = SIZE_MIB // 3
    i = 0
    while left > 0:
        n = min(left, 16)
        (tree / f"f{i}").write_bytes(os.urandom(n << 20))
        left -= n
        i += 1
    img = work / "fs.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-T", "default", "-E", "nodiscard",
                    "-d", str(tree), str(img), f"{SIZE_MIB}M"], check=True)
    shutil.rmtree(tree)
    return img


def _cpu(who: int) -> float:
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


def _timed(fn, cpu: list[float], who: int = resource.RUSAGE_SELF) -> float:
    """Wall time of fn(); its CPU time (ours, or the children's) is appended to ``cpu``."""
    c, t = _cpu(who), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    cpu.append(_cpu(who) - c)
    return wall


def main() -> list[dict]:
    from imagebuilder.disk import luks2 as L
    from imagebuilder.secrets import secret_tempfile

    params = L.Luks2Params(kdf=L.Kdf.pbkdf2(iterations=1000), digest_iterations=1000)
    payload_mb = SIZE_MIB * (1 << 20) / 1e6
    with tempfile.TemporaryDirectory(prefix="luks-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as d:
        work = Path(d)
        img = _mkfs(work)
        out = work / "c.luks"
        back = work / "back.ext4"
        enc, dec, base = [], [], []
        enc_cpu: list[float] = []
        dec_cpu: list[float] = []
        base_cpu: list[float] = []
        for _ in range(REPEAT):
            for p in (out, back):
                p.unlink(missing_ok=True)
            os.sync()
            enc.append(_timed(lambda: L.encrypt_image(img, out, params=params, keys=[PASS]), enc_cpu))
            os.sync()
            dec.append(_timed(lambda: L.decrypt_image(out, back, secret=PASS), dec_cpu))
        if back.read_bytes() != img.read_bytes():
            raise AssertionError("round trip differs")
        baseline_ok = os.geteuid() == 0 and shutil.which("cryptsetup") is not None
        if baseline_ok:
            for _ in range(REPEAT):
                copy = work / "cs.img"
                with open(img, "rb") as s, open(copy, "wb") as f:
                    shutil.copyfileobj(s, f, 4 << 20)
                    f.truncate(os.fstat(s.fileno()).st_size + (32 << 20))
                os.sync()
                with secret_tempfile(PASS, dir=work) as kf:
                    argv = ["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2",
                            "--reduce-device-size", "32M", "--sector-size", "4096",
                            "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                            "--batch-mode", "--force-offline-reencrypt", "--key-file", str(kf),
                            str(copy)]
                    base.append(_timed(lambda: (subprocess.run(argv, check=True), os.sync()),
                                       base_cpu, resource.RUSAGE_CHILDREN))
                copy.unlink()
    e, dd = statistics.median(enc), statistics.median(dec)
    rows = [
        {"metric": f"encrypt {SIZE_MIB} MiB (ours)", "value": round(e, 3), "unit": "s"},
        {"metric": "encrypt throughput (ours)", "value": round(payload_mb / e, 1), "unit": "MB/s"},
        {"metric": "decrypt throughput (ours)", "value": round(payload_mb / dd, 1), "unit": "MB/s"},
        {"metric": "encrypt CPU throughput (ours)", "value": round(payload_mb / statistics.median(enc_cpu), 1),
         "unit": "MB/s"},
    ]
    if base:
        b = statistics.median(base)
        rows += [
            {"metric": f"cryptsetup reencrypt --encrypt {SIZE_MIB} MiB", "value": round(b, 3), "unit": "s"},
            {"metric": "cryptsetup throughput", "value": round(payload_mb / b, 1), "unit": "MB/s"},
            {"metric": "ours / cryptsetup (time)", "value": round(e / b, 2), "unit": "x"},
            {"metric": "ours / cryptsetup (CPU time)",
             "value": round(statistics.median(enc_cpu) / statistics.median(base_cpu), 2), "unit": "x"},
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"size_mib": SIZE_MIB, "repeat": REPEAT, "encrypt_s": enc,
                                   "decrypt_s": dec, "cryptsetup_s": base,
                                   "encrypt_cpu_s": enc_cpu, "cryptsetup_cpu_s": base_cpu,
                                   "loadavg": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    for r in rows:
        print(f"  {r['metric']}: {r['value']} {r['unit']}")
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(RESULTS.parents[2]))  # bench/run.py does this for its modules
    main()
