"""Stage discovery and option validation.

Stages are executables ``org.imagebuilder.NAME`` with a ``NAME.meta.json`` beside them
(see :mod:`imagebuilder.pipeline.stageapi`). They are looked up in, by priority:

1. ``$IMAGEBUILDER_STAGES_DIR`` (one directory; tests and development use this),
2. ``osbuild-stages/`` of the source checkout this package was imported from,
3. ``<prefix>/share/imagebuilder/osbuild-stages`` of the installed package (pip data files).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, UserInputError

STAGES_ENV = "IMAGEBUILDER_STAGES_DIR"
STAGE_PREFIX = "org.imagebuilder."


def stages_dir() -> Path:
    """The directory holding the stage executables."""
    env = os.environ.get(STAGES_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise UserInputError(f"{STAGES_ENV}={env}: not a directory")
        return p
    candidates = [
        Path(__file__).resolve().parents[2] / "osbuild-stages",
        Path(sys.prefix) / "share" / "imagebuilder" / "osbuild-stages",
        Path(sys.base_prefix) / "share" / "imagebuilder" / "osbuild-stages",
        Path("/usr/local/share/imagebuilder/osbuild-stages"),
        Path("/usr/share/imagebuilder/osbuild-stages"),
    ]
    for c in candidates:
        if c.is_dir() and any(c.glob(f"{STAGE_PREFIX}*.meta.json")):
            return c
    raise UserInputError(
        "no stage directory found (looked in: " + ", ".join(str(c) for c in candidates) + ")",
        hint=f"set {STAGES_ENV} to the osbuild-stages directory",
    )


@dataclass(frozen=True)
class StageInfo:
    """One stage executable and its metadata."""

    name: str
    path: Path
    summary: str
    description: str
    schema: dict[str, Any]
    digest: str  # sha256 of the stage's code closure (part of every stage id, see code_digest)

    def validate(self, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Return [(option path, message)] for every schema violation (empty if valid)."""
        import jsonschema

        validator_cls = jsonschema.validators.validator_for(self.schema)
        validator = validator_cls(self.schema)
        errors = []
        for err in sorted(validator.iter_errors(options), key=lambda e: list(map(str, e.path))):
            path = "/".join(str(p) for p in err.absolute_path) or "(options)"
            errors.append((path, err.message))
        return errors


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../imagebuilder
DATA_DIR = PACKAGE_DIR / "data"


def _module_file(module: str) -> Path | None:
    """The source file of an ``imagebuilder.*`` module (package __init__ or module.py)."""
    parts = module.split(".")
    if parts[0] != "imagebuilder":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports_of(path: Path, module: str | None) -> tuple[set[str], set[str]]:
    """(imagebuilder modules imported, string literals) of one Python source file."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return set(), set()
    pkg = module.rsplit(".", 1)[0] if module and path.name != "__init__.py" else module
    mods: set[str] = set()
    strings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and pkg:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            mods.add(target)
            mods.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 100:
            strings.add(node.value)
    return {m for m in mods if m.split(".")[0] == "imagebuilder"}, strings


def code_digest(exe: Path) -> str:
    """sha256 over the stage executable and everything of imagebuilder it runs.

    The closure is followed through imports (``imagebuilder.*``, absolute or relative), and
    every directory of ``imagebuilder/data/`` named by a string literal in that code (e.g. the
    OS-integration files a stage installs) is included. So editing a stage, a library module
    it uses or the data it installs invalidates exactly the cached results that depend on it,
    while unrelated changes keep the cache warm.
    """
    h = hashlib.sha256()
    h.update(b"stage\0" + _file_sha256(exe).encode())
    seen: dict[str, Path] = {}
    literals: set[str] = set()
    todo, lits = _imports_of(exe, None)
    literals |= lits
    todo = set(todo)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        f = _module_file(mod)
        if f is None:
            continue
        seen[mod] = f
        # importing a.b.c also runs a/__init__ and a/b/__init__
        parts = mod.split(".")
        todo.update(".".join(parts[:i]) for i in range(2, len(parts)))
        more, lits = _imports_of(f, mod)
        todo |= more - seen.keys()
        literals |= lits
    for mod, f in sorted(seen.items()):
        h.update(f"module\0{mod}\0{_file_sha256(f)}\n".encode())
    if DATA_DIR.is_dir():
        for name in sorted(literals):
            d = DATA_DIR / name
            if name not in ("", ".", "..") and "/" not in name and d.is_dir():
                for p in sorted(x for x in d.rglob("*") if x.is_file()):
                    h.update(f"data\0{p.relative_to(DATA_DIR)}\0{_file_sha256(p)}\n".encode())
    return h.hexdigest()


def _load(exe: Path, meta_path: Path) -> StageInfo:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidConfigError(f"{meta_path}: cannot read stage metadata: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("schema", {}), dict):
        raise InvalidConfigError(f"{meta_path}: expected an object with summary, description, schema")
    desc = meta.get("description", "")
    if isinstance(desc, list):
        desc = "\n".join(desc)
    return StageInfo(
        name=exe.name,
        path=exe,
        summary=str(meta.get("summary", "")),
        description=str(desc),
        schema=meta.get("schema") or {"type": "object"},
        digest=code_digest(exe),
    )


class StageIndex:
    """The stages of one stage directory, loaded lazily by name."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else stages_dir()
        self._cache: dict[str, StageInfo] = {}

    def names(self) -> list[str]:
        out = []
        for meta in self.directory.glob(f"{STAGE_PREFIX}*.meta.json"):
            name = meta.name[: -len(".meta.json")]
            if (self.directory / name).is_file():
                out.append(name)
        return sorted(out)

    def get(self, name: str) -> StageInfo:
        if name in self._cache:
            return self._cache[name]
        if "/" in name or not name.startswith(STAGE_PREFIX):
            raise InvalidConfigError(f"invalid stage type {name!r} (expected {STAGE_PREFIX}NAME)")
        exe = self.directory / name
        meta = self.directory / f"{name}.meta.json"
        if not exe.is_file() or not meta.is_file():
            from .definition import did_you_mean

            raise InvalidConfigError(
                f"unknown stage {name!r} (not in {self.directory})",
                hint=did_you_mean(name, self.names()),
            )
        info = _load(exe, meta)
        self._cache[name] = info
        return info

    def all(self) -> list[StageInfo]:
        return [self.get(n) for n in self.names()]
