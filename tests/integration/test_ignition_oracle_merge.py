"""The real Ignition binary as the oracle for ``ignition merge``.

For each case of fixtures/ignition/merge, BASE gets its CHILDren appended to
``ignition.config.merge`` as base64 data URLs, and Ignition 2.14 runs its
``fetch-offline`` stage on it (``-platform file``, the config given by
``IGNITION_CONFIG_FILE``) inside a private mount namespace with a tmpfs on
/run (it writes its state there). ``-config-cache OUT`` receives the rendered,
merged config at Ignition's internal version (3.4.0-experimental).

Our merge must equal it, ignoring null / empty objects / empty lists and the
version, after two normalisations of Ignition's cache that are not merge
semantics: data-URL references in ``ignition.config.merge`` / ``replace`` are
dropped (ours resolves them; Ignition keeps them listed), and CA bundles are
compared by decoded content (Ignition caches every CA as an uncompressed
``data:text/plain;charset=utf-8;base64,`` URL for the later stages).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from imagebuilder.ignition import decode
from imagebuilder.ignition.merge import _drop_resolved_references, merge_bytes
from imagebuilder.run import run

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "ignition" / "merge"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not IGNITION.is_file(), reason=f"{IGNITION} not found (apt-get install ignition)"),
]


def children_of(case: Path) -> list[Path]:
    return sorted(case.glob("child-*.ign"), key=lambda p: int(p.stem.split("-")[1]))


def strip_empty(x: Any) -> Any:
    if isinstance(x, dict):
        out = {k: strip_empty(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(x, list):
        return [strip_empty(v) for v in x]
    return x


def comparable(cfg: dict) -> dict:
    out = _drop_resolved_references(strip_empty(cfg))
    out["ignition"].pop("version", None)
    cas = out.get("ignition", {}).get("security", {}).get("tls", {}).get("certificateAuthorities", [])
    for ca in cas:
        data = decode.decode_contents(ca)
        if data is not None:
            ca["source"] = data.decode()
            ca.pop("compression", None)
    return strip_empty(out)


def run_ignition(base: Path, children: list[Path], tmp: Path) -> dict:
    top = json.loads(base.read_text())
    refs = [{"source": "data:;base64," + base64.b64encode(c.read_bytes()).decode()} for c in children]
    top.setdefault("ignition", {}).setdefault("config", {}).setdefault("merge", []).extend(refs)
    cfg_file = tmp / "user.ign"
    cfg_file.write_text(json.dumps(top))
    out = tmp / "cache.json"
    script = ("mount -t tmpfs tmpfs /run && exec "
              f"{shlex.quote(str(IGNITION))} -platform file -stage fetch-offline -log-to-stdout "
              f"-config-cache {shlex.quote(str(out))}")
    proc = run(["unshare", "-m", "sh", "-c", script], env={"IGNITION_CONFIG_FILE": os.fspath(cfg_file)},
               text=True, timeout=120, check=False)
    assert proc.returncode == 0 and out.is_file(), f"ignition failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge_agrees_with_ignition(case: Path, tmp_path: Path):
    kids = children_of(case)
    oracle = run_ignition(case / "base.ign", kids, tmp_path)
    assert oracle["ignition"]["version"].startswith("3.")
    ours = merge_bytes((case / "base.ign").read_bytes(), [(k.read_bytes(), k.name) for k in kids]).config
    assert comparable(ours) == comparable(oracle)


def test_ignition_rejects_what_merge_rejects(tmp_path: Path):
    """A merge producing an invalid config: Ignition fails, and so does ours."""
    from imagebuilder.errors import InvalidConfigError

    base = tmp_path / "base.ign"
    child = tmp_path / "child.ign"
    base.write_text(json.dumps({"ignition": {"version": "3.3.0"},
                                "storage": {"files": [{"path": "/f", "user": {"id": 0}}]}}))
    child.write_text(json.dumps({"ignition": {"version": "3.3.0"},
                                 "storage": {"files": [{"path": "/f", "user": {"name": "core"}}]}}))
    with pytest.raises(AssertionError, match="merging configs resulted in an invalid config"):
        run_ignition(base, [child], tmp_path)
    with pytest.raises(InvalidConfigError, match="merging configs resulted in an invalid config"):
        merge_bytes(base.read_bytes(), [(child.read_bytes(), child.name)])
