"""A stage's id covers its code closure: the executable, the imagebuilder modules it imports
(transitively) and the data directories that code names — and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

from imagebuilder.pipeline import stages

REPO = Path(__file__).resolve().parents[2]


def _closure(name: str) -> set[str]:
    todo, _ = stages._imports_of(REPO / "osbuild-stages" / name, None)
    seen: set[str] = set()
    todo = set(todo)
    while todo:
        m = todo.pop()
        if m in seen or stages._module_file(m) is None:
            continue
        seen.add(m)
        more, _ = stages._imports_of(stages._module_file(m), m)
        todo |= more
    return seen


def test_closure_follows_relative_imports():
    mods = _closure("org.imagebuilder.ostree.prepare")
    assert {"imagebuilder.ostree.prepare", "imagebuilder.run", "imagebuilder.errors"} <= mods
    assert "imagebuilder.iso.image" not in mods  # unrelated code does not invalidate the cache


def test_digest_changes_with_library_and_data_not_with_unrelated(tmp_path, monkeypatch):
    pkg = tmp_path / "imagebuilder"
    shutil.copytree(REPO / "imagebuilder", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    exe = REPO / "osbuild-stages" / "org.imagebuilder.ostree.prepare"
    monkeypatch.setattr(stages, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(stages, "DATA_DIR", pkg / "data")
    d0 = stages.code_digest(exe)
    (pkg / "iso" / "kargs.py").write_text("# unrelated edit\n", encoding="utf-8")
    assert stages.code_digest(exe) == d0
    with open(pkg / "ostree" / "prepare.py", "a") as f:
        f.write("\n# library edit\n")
    d1 = stages.code_digest(exe)
    assert d1 != d0
    data = next(p for p in (pkg / "data" / "selfcheck").rglob("*") if p.is_file())
    data.write_bytes(data.read_bytes() + b"\n")
    assert stages.code_digest(exe) != d1
