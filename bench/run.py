#!/usr/bin/env python3
"""`make bench`: run every ``bench/*_bench.py`` module's ``main()`` and print one table.

Contract for a bench module (``bench/NAME_bench.py``):

* ``main()`` (called without arguments) returns its rows: a list of dicts, or a dict with a
  ``"rows"`` list; one row per metric with keys ``metric`` (str), ``value`` (number),
  ``unit`` (str), optional ``target`` (str, e.g. ``"<= 1.1"``) and ``ok`` (bool or None).
  Anything else is listed as "done" (the module printed its own detail);
* it may print its own detail and write ``bench/results/NAME.json``;
* an exception fails that module only (reported in the table, exit status 1 at the end).

``bench/run.py [NAME ...]`` runs only the named modules (``iso`` for ``iso_bench.py``).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def main(argv: list[str]) -> int:
    modules = sorted(HERE.glob("*_bench.py"))
    if argv:
        wanted = {a.removesuffix("_bench").removesuffix(".py") for a in argv}
        modules = [m for m in modules if m.stem.removesuffix("_bench") in wanted]
    rows: list[tuple[str, dict]] = []
    failed = 0
    for path in modules:
        name = path.stem.removesuffix("_bench")
        print(f"== {name} ({path.name})", flush=True)
        t0 = time.monotonic()
        try:
            result = load(path).main()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - one module's failure must not hide the others
            traceback.print_exc()
            rows.append((name, {"metric": "ERROR", "value": f"{type(e).__name__}: {e}", "unit": "",
                                "ok": False}))
            failed += 1
            continue
        if isinstance(result, dict) and isinstance(result.get("rows"), list):
            result = result["rows"]
        if isinstance(result, list) and all(isinstance(r, dict) and "metric" in r for r in result):
            rows.extend((name, r) for r in result)
        else:
            rows.append((name, {"metric": "done (see its output / bench/results)", "value": "",
                                "unit": "", "ok": None}))
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    if not rows:
        print("no bench modules found")
        return 0
    table = [("bench", "metric", "value", "unit", "target", "ok")]
    for name, r in rows:
        ok = r.get("ok")
        table.append((name, str(r.get("metric", "")), fmt(r.get("value", "")), str(r.get("unit", "")),
                      str(r.get("target") or ""), "" if ok is None else ("yes" if ok else "NO")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print()
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) if j == 2 else c.ljust(w)
                        for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    misses = sum(1 for _n, r in rows if r.get("ok") is False)
    if misses:
        print(f"\n{misses} metric(s) missed their target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
