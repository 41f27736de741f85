"""The project's own generated live ISOs (fixtures/liveiso/make_liveiso.py), for tests that
must not depend on ../shared, plus small helpers to run the CLI and measure it."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# runs argv as its only child; prints: peak RSS of that child (KiB), exit status
_RSS_WRAPPER = ("import resource, subprocess, sys; "
                "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
                "sys.stderr.buffer.write(r.stderr); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")


@functools.cache
def module():
    spec = importlib.util.spec_from_file_location("make_liveiso",
                                                  REPO / "fixtures/liveiso/make_liveiso.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(*, plain: bool = False, pad_mib: int = 0) -> Path:
    """The cached generated live ISO (built on first use)."""
    return module().build_liveiso(plain=plain, pad_bytes=pad_mib << 20)


def cli(*args, input: bytes | None = None, cwd: str | Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "imagebuilder", *map(str, args)], input=input,
                          capture_output=True, cwd=cwd, env=e)


def cli_rss(*args, input: bytes | None = None) -> tuple[int, int, str]:
    """(peak RSS in MiB, exit status, stderr) of one CLI run."""
    r = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "imagebuilder",
                        *map(str, args)], input=input, capture_output=True)
    rss, rc = r.stdout.split()
    return int(rss) // 1024, int(rc), r.stderr.decode(errors="replace")
