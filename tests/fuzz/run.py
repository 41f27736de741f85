#!/usr/bin/env python3
"""Run one fuzz target under atheris (libFuzzer, coverage-guided).

    python tests/fuzz/run.py NAME [--runs N] [--seconds S] [--rss-mb M] [--timeout T]
    python tests/fuzz/run.py --list

A target is ``tests/fuzz/targets/NAME.py`` with:

* ``seeds() -> list[pathlib.Path]``: files whose bytes seed the corpus (fixtures);
* ``one_input(data: bytes) -> None``: feeds the bytes to the parser under test;
* ``EXPECTED``: the exception types that count as a *typed* rejection of bad input
  (normally ``imagebuilder.errors.ImageBuilderError`` minus ``InternalError``).

Any other exception, a hang longer than ``--timeout`` seconds, or RSS above ``--rss-mb``
is a finding: libFuzzer stops and writes the input to ``crash-*``/``timeout-*``/``oom-*``
in the working directory. The exit status is 0 when the run finished without a finding.
libFuzzer's final stats (``stat::number_of_executed_units``, ``stat::peak_rss_mb``) are
the figures to quote.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = HERE / "targets"


def load_target(name: str):
    path = TARGETS / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"no fuzz target {name!r} (have: {', '.join(list_targets())})")
    spec = importlib.util.spec_from_file_location(f"fuzz_target_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS.glob("*.py") if not p.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?")
    ap.add_argument("--list", action="store_true", help="list the targets")
    ap.add_argument("--runs", type=int, default=0, help="stop after N inputs (0: no limit)")
    ap.add_argument("--seconds", type=int, default=0, help="stop after S seconds (0: no limit)")
    ap.add_argument("--rss-mb", type=int, default=512, help="peak RSS that counts as a finding")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--max-len", type=int, default=0, help="largest input (0: 4x the largest seed)")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(list_targets()))
        return 0
    if not args.name:
        ap.error("a target name is required (--list shows them)")

    import atheris

    from imagebuilder.errors import InternalError

    with atheris.instrument_imports(include=["imagebuilder"]):
        target = load_target(args.name)
    expected = tuple(target.EXPECTED)
    count = 0

    def test_one(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            target.one_input(data)
        except expected as exc:
            if isinstance(exc, InternalError):  # exit 70 is a bug, never a clean rejection
                raise

    seeds = [p for p in target.seeds() if p.is_file()]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.name}-"))
    for i, p in enumerate(seeds):
        (corpus / f"seed-{i:04d}").write_bytes(p.read_bytes())
    max_len = args.max_len or max([4096, *(4 * p.stat().st_size for p in seeds)])
    lf_args = [sys.argv[0], str(corpus), f"-rss_limit_mb={args.rss_mb}",
               f"-timeout={args.timeout}", f"-max_len={max_len}", "-print_final_stats=1"]
    if args.runs:
        lf_args.append(f"-runs={args.runs}")
    if args.seconds:
        lf_args.append(f"-max_total_time={args.seconds}")
    atheris.Setup(lf_args, test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("IMAGEBUILDER_FUZZING", "1")
    sys.exit(main())
