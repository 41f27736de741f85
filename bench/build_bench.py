#!/usr/bin/env python3
"""Build engine benchmark: cold build vs warm rebuilds from the cache.

For each image (default: the tiny test OS, offline; ``--image debian`` adds the mmdebstrap
Debian definition, which needs the mirror and minutes):

1. cold build into an empty cache (every stage runs),
2. warm rebuild with no change (every stage cached: pure engine overhead),
3. warm rebuild after one kernel-argument change: only ``ostree.deploy``, ``grub.config`` and
   ``disk.image`` may rerun; target ≤ 5 % of the cold time,

recording the time of every stage, the peak disk use of the store (sampled during the
builds, workspaces included) and its final size. Prints a table; writes
``bench/results/build.json``. Run through ``bench/run.py`` (calls ``main()``) or directly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "build.json"
TARGET_RATIO = 0.05
DOWNSTREAM = {"org.imagebuilder.ostree.deploy", "org.imagebuilder.grub.config", "org.imagebuilder.disk.image"}

sys.path.insert(0, str(REPO))


class StoreSampler:
    """Peak bytes allocated under the cache directory, sampled in a thread."""

    def __init__(self, path: Path, interval: float = 2.0):  # a walk of a Debian store costs ~1 s
        self.path = path
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from imagebuilder.pipeline.store import tree_usage

        while not self._stop.is_set():
            if self.path.exists():
                self.peak = max(self.peak, tree_usage(self.path))
            self._stop.wait(self.interval)

    def __enter__(self) -> "StoreSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        from imagebuilder.pipeline.store import tree_usage

        if self.path.exists():
            self.peak = max(self.peak, tree_usage(self.path))


def _build(definition: Path, cache: Path, out: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(definition), "--cache", str(cache),
                        "-o", str(out), "-f", "--json", "-q"], capture_output=True, text=True, cwd=REPO)
    seconds = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"build of {definition} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return seconds, json.loads(r.stdout)


def _prepare_tiny(work: Path) -> Path:
    import yaml

    rootfs = work / "tinyos"
    subprocess.run([sys.executable, str(REPO / "fixtures" / "tinyos" / "mktinyos"), str(rootfs)],
                   check=True, capture_output=True, cwd=REPO)
    d = yaml.safe_load((REPO / "fixtures" / "images" / "tiny.yaml").read_text())
    d["source"]["path"] = str(rootfs)
    p = work / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _prepare_debian(work: Path) -> Path:
    import yaml

    d = yaml.safe_load((REPO / "fixtures" / "images" / "debian.yaml").read_text())
    p = work / "debian.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _with_karg(definition: Path, karg: str) -> Path:
    import yaml

    d = yaml.safe_load(definition.read_text())
    d["kernel_args"] = [*(d.get("kernel_args") or []), karg]
    p = definition.with_name(definition.stem + "-karg.yaml")
    p.write_text(yaml.safe_dump(d))
    return p


def _stage_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"stage": f"{s['pipeline']}/{s['index']} {s['type'].removeprefix('org.imagebuilder.')}",
             "type": s["type"], "status": s["status"], "seconds": s["seconds"],
             "store_seconds": s.get("store_seconds", 0.0)} for s in summary["stages"]]


def bench_image(name: str, work: Path) -> dict[str, Any]:
    prep_t0 = time.monotonic()
    definition = _prepare_tiny(work) if name == "tiny" else _prepare_debian(work)
    prep = time.monotonic() - prep_t0
    cache = work / "cache"
    with StoreSampler(cache) as sampler:
        cold_s, cold = _build(definition, cache, work / "out")
        nochange_s, nochange = _build(definition, cache, work / "out")
        karg_s, karg = _build(_with_karg(definition, "bench.karg=1"), cache, work / "out")
    from imagebuilder.pipeline.store import tree_usage

    reran = sorted({s["type"] for s in karg["stages"] if s["status"] == "ran"})
    return {
        "image": name,
        "source_prepare_seconds": round(prep, 2),
        "cold_seconds": round(cold_s, 2),
        "warm_nochange_seconds": round(nochange_s, 2),
        "warm_karg_seconds": round(karg_s, 2),
        "warm_karg_ratio": round(karg_s / cold_s, 4),
        "target_ratio": TARGET_RATIO,
        "meets_target": karg_s / cold_s <= TARGET_RATIO,
        "karg_reran": reran,
        "only_downstream_reran": set(reran) <= DOWNSTREAM,
        "nochange_all_cached": all(s["status"] == "cached" for s in nochange["stages"]),
        "store_peak_bytes": sampler.peak,
        "store_final_bytes": tree_usage(cache),
        "artifact_bytes": cold["artifacts"][0]["size"] if cold["artifacts"] else 0,
        "stages_cold": _stage_rows(cold),
        "stages_warm_karg": _stage_rows(karg),
    }


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        if "error" in r:
            console.print(f"[red]build engine: {r['image']}: failed[/]\n{r['error']}")
            continue
        t = Table(title=f"build engine: {r['image']}", title_justify="left")
        t.add_column("stage")
        t.add_column("cold s", justify="right")
        t.add_column("cold store s", justify="right")
        t.add_column("warm (karg) s", justify="right")
        warm = {s["stage"]: s for s in r["stages_warm_karg"]}
        for s in r["stages_cold"]:
            w = warm.get(s["stage"], {})
            t.add_row(s["stage"], f"{s['seconds']:.2f}", f"{s['store_seconds']:.2f}",
                      f"{w['seconds']:.2f}" if w.get("status") == "ran" else "cached")
        t.add_section()
        t.add_row("total (wall, incl. CLI start + export)", f"{r['cold_seconds']:.2f}", "",
                  f"{r['warm_karg_seconds']:.2f}")
        console.print(t)
        verdict = "meets" if r["meets_target"] else "misses"
        console.print(
            f"warm rebuild after one kernel-arg change: {r['warm_karg_ratio'] * 100:.1f} % of cold "
            f"({verdict} the ≤ {TARGET_RATIO * 100:.0f} % target); reran: "
            f"{', '.join(x.removeprefix('org.imagebuilder.') for x in r['karg_reran'])}; "
            f"no-change rebuild {r['warm_nochange_seconds']:.2f} s (all cached: {r['nochange_all_cached']}); "
            f"store peak {_mib(r['store_peak_bytes'])}, final {_mib(r['store_final_bytes'])}; "
            f"artifact {_mib(r['artifact_bytes'])} (sparse)\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", action="append", choices=["tiny", "debian"],
                    help="image(s) to benchmark (default: tiny; also $IMAGEBUILDER_BENCH_IMAGES=tiny,debian)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv if argv is not None else [])
    images = args.image or [i for i in os.environ.get("IMAGEBUILDER_BENCH_IMAGES", "tiny").split(",") if i]
    results = []
    for image in images:
        work = Path(tempfile.mkdtemp(prefix=f"ib-build-bench-{image}-", dir=os.environ.get("TMPDIR", "/var/tmp")))
        try:
            results.append(bench_image(image, work))
        except (SystemExit, Exception) as e:  # keep the other images' figures
            results.append({"image": image, "error": str(e)[-2000:]})
        finally:
            if not args.keep:
                from imagebuilder.pipeline.store import rmtree

                rmtree(work)  # detaches any mount a failed stage left, never deletes through it
    print_table(results)
    doc = {"benchmark": "build", "host_cpus": os.cpu_count(), "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
