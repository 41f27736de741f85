#!/usr/bin/env python3
"""Remote cache benchmark: push and pull store objects through a real local registry.

For each object (default: the largest ``source.mmdebstrap``, ``ostree.deploy`` and
``disk.image`` objects of the build cache, i.e. a Debian build's; a synthetic tree of
``--synthetic-mib`` when the cache has none), in one process:

1. baseline: ``Store.restore`` of the object (``cp -a``, what a local warm build does);
2. push to an empty repository of a fresh docker-registry (TLS + htpasswd, on 127.0.0.1);
3. pull into an empty store (verify, unpack, rename into place).

Reports MiB/s of tree data (allocated bytes) for push and pull, the compressed size, and
the pull time as a ratio of the local restore. Writes ``bench/results/remote_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "remote_cache.json"
TYPES = ("org.imagebuilder.source.mmdebstrap", "org.imagebuilder.ostree.deploy",
         "org.imagebuilder.disk.image")

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def default_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(os.environ.get("IMAGEBUILDER_BENCH_CACHE",
                               Path(xdg) / "imagebuilder" if xdg else Path.home() / ".cache/imagebuilder"))


def pick_objects(store, types=TYPES) -> list[str]:
    from imagebuilder.pipeline.store import tree_usage

    best: dict[str, tuple[int, str]] = {}
    for oid in store.object_ids():
        try:
            t = json.loads((store.object_dir(oid) / "object.json").read_text()).get("type")
        except (OSError, ValueError):
            continue
        if t in types:
            size = tree_usage(store.object_tree(oid))
            if size > best.get(t, (0, ""))[0]:
                best[t] = (size, oid)
    return [best[t][1] for t in types if t in best and best[t][0] > 256 << 20]


def synthetic(store, mib: int) -> str:
    """A Debian-like tree: many small files (some hard-linked), a few large ones, a sparse
    disk image holding half of the data."""
    import hashlib
    import random

    rng = random.Random(1)
    oid = hashlib.sha256(f"synthetic-{mib}".encode()).hexdigest()
    if store.contains(oid):
        return oid
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz \n") for _ in range(64)) for _ in range(512)]
    with store.tempdir("bench") as tmp:
        tree = tmp / "tree"
        budget = (mib << 20) // 2
        n = 0
        while budget > 0:
            d = tree / "usr" / f"d{n % 400}"
            d.mkdir(parents=True, exist_ok=True)
            size = min(budget, int(rng.lognormvariate(9, 1.5)) + 1)
            text = b"".join(rng.choice(words) for _ in range(size // 64 + 1))[:size]
            (d / f"f{n}").write_bytes(text[: size // 2] + os.urandom(size - size // 2))
            if n % 7 == 0:
                os.link(d / f"f{n}", d / f"f{n}.link")
            budget -= size
            n += 1
        with open(tree / "disk.img", "wb") as f:
            f.truncate(4 << 30)
            block = os.urandom(1 << 20)
            for i in range(mib // 2):
                f.seek((i * 7 % 4000) << 20)
                f.write(block[: 1 << 19] + bytes(1 << 19))
        store.commit(oid, tree, move=True, meta={"type": "bench.synthetic"})
    return oid


def measure(store, oid: str, server, work: Path) -> dict:
    from imagebuilder.cache.remote import RemoteCache, RemoteSpec
    from imagebuilder.pipeline.store import Store, rmtree, tree_usage

    typ = json.loads((store.object_dir(oid) / "object.json").read_text()).get("type")
    allocated = tree_usage(store.object_tree(oid))
    t0 = time.monotonic()
    store.restore(oid, work / "restored")
    restore_s = time.monotonic() - t0
    rmtree(work / "restored")
    remote = RemoteCache(RemoteSpec(server.url(f"bench/{oid[:12]}"), auth_file=server.auth_file(),
                                    cert_dir=server.cert_dir, timeout=120))
    pushed = remote.push(store, oid)
    target = Store(work / "store-b")
    pulled = remote.pull(target, oid)
    rmtree(work / "store-b")
    mib = allocated / (1 << 20)
    return {"id": oid, "type": typ, "allocated_mib": round(mib, 1),
            "compressed_mib": round(pushed.bytes / (1 << 20), 1),
            "layers": len(remote.lookup(oid).manifest["layers"]),
            "restore_s": round(restore_s, 2), "push_s": round(pushed.seconds, 2),
            "pull_s": round(pulled.seconds, 2),
            "push_mib_s": round(mib / pushed.seconds, 1), "pull_mib_s": round(mib / pulled.seconds, 1),
            "pull_vs_restore": round(pulled.seconds / max(restore_s, 1e-3), 2)}


def main(argv: list[str] | None = None) -> list[dict]:
    from registry_server import RegistryServer

    from imagebuilder.pipeline.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    ap.add_argument("--id", action="append", default=[], help="object id(s) to measure")
    ap.add_argument("--synthetic-mib", type=int, default=1024)
    args = ap.parse_args(argv if argv is not None else [])
    store = Store(args.cache)
    ids = args.id or pick_objects(store)
    with tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp:
        work = Path(tmp)
        if not ids:
            ids = [synthetic(Store(work / "synthetic"), args.synthetic_mib)]
            store = Store(work / "synthetic")
        server = RegistryServer(work / "registry").start()
        try:
            results = [measure(store, oid, server, work) for oid in ids]
        finally:
            server.stop()
    load = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"load": load, "objects": results}, indent=2) + "\n")
    rows = []
    for r in results:
        print(f"{r['type']:40} {r['allocated_mib']:8.1f} MiB -> {r['compressed_mib']:7.1f} MiB "
              f"in {r['layers']} layers; push {r['push_s']:6.1f} s ({r['push_mib_s']} MiB/s), "
              f"pull {r['pull_s']:6.1f} s ({r['pull_mib_s']} MiB/s), cp -a {r['restore_s']:5.1f} s")
        short = r["type"].rsplit(".", 1)[-1]
        rows += [{"metric": f"remote push {short}", "value": r["push_mib_s"], "unit": "MiB/s"},
                 {"metric": f"remote pull {short}", "value": r["pull_mib_s"], "unit": "MiB/s"},
                 {"metric": f"remote pull / cp -a {short}", "value": r["pull_vs_restore"], "unit": "x",
                  "ok": None}]
    print(f"load average {load:.1f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
