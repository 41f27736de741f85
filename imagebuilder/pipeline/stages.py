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
    digest: str  # sha256 of the executable (part of every stage id: editing it invalidates caches)

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
        digest=_file_sha256(exe),
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
