"""A build's output directory as ``verify``, ``sign``, ``diff`` and the SBOM read it.

``imagebuilder build`` writes ``OUTDIR/{ARTIFACTS, meta.json, manifest.json, build.log}``;
``sign`` adds ``SHA256SUMS`` + ``SHA256SUMS.sig`` and the SBOM ``sbom.spdx.json``. Everything
read from meta.json is untrusted here: artifact names must be plain file names in OUTDIR.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError, UserInputError

META = "meta.json"
MANIFEST = "manifest.json"
SBOM = "sbom.spdx.json"
SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"
BUILD_LOG = "build.log"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def safe_name(name: Any) -> bool:
    """A plain file name in OUTDIR (no path, no control characters, nothing a checksum line
    or a shell would need escaped)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and not any(ord(c) < 32 or ord(c) == 127 for c in name))


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact as meta.json records it."""

    name: str
    size: int | None
    sha256: str | None
    format: str | None = None
    uncompressed_sha256: str | None = None
    uncompressed_size: int | None = None


def _artifact(entry: Any, fallback_name: str | None = None) -> ArtifactRecord | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("name") or entry.get("path") or fallback_name

    def _int(k: str) -> int | None:
        v = entry.get(k)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def _hex(*keys: str) -> str | None:
        for k in keys:
            v = entry.get(k)
            if isinstance(v, str):
                return v.lower()
        return None

    return ArtifactRecord(
        name=name if isinstance(name, str) else repr(name),
        size=_int("size"),
        sha256=_hex("sha256"),
        format=entry.get("format") if isinstance(entry.get("format"), str) else None,
        uncompressed_sha256=_hex("uncompressed-sha256", "uncompressed_sha256"),
        uncompressed_size=_int("uncompressed-size") or _int("uncompressed_size"),
    )


@dataclass
class OutDir:
    path: Path
    meta: dict[str, Any]
    manifest: dict[str, Any] | None

    @classmethod
    def load(cls, path: str | Path) -> "OutDir":
        p = Path(path)
        if not p.is_dir():
            raise UserInputError(f"{p}: not a directory (expected a build's output directory)")
        meta = load_json(p / META, required=True)
        if not isinstance(meta, dict):
            raise InvalidConfigError(f"{p / META}: not a JSON object")
        manifest = load_json(p / MANIFEST, required=False)
        if manifest is not None and not isinstance(manifest, dict):
            raise InvalidConfigError(f"{p / MANIFEST}: not a JSON object")
        return cls(p, meta, manifest)

    def artifacts(self) -> list[ArtifactRecord]:
        """The artifacts meta.json lists: ``artifacts: [{name, size, sha256, ...}]`` (ours) or
        cosa's ``images: {KEY: {path, size, sha256, uncompressed-sha256, ...}}``."""
        out: list[ArtifactRecord] = []
        arts = self.meta.get("artifacts")
        if isinstance(arts, list):
            out += [a for a in (_artifact(e) for e in arts) if a is not None]
        elif isinstance(arts, dict):
            out += [a for a in (_artifact(e, k) for k, e in sorted(arts.items())) if a is not None]
        images = self.meta.get("images")
        if isinstance(images, dict):
            out += [a for a in (_artifact(e, k) for k, e in sorted(images.items())) if a is not None]
        return out

    def signed_names(self) -> list[str]:
        """What SHA256SUMS covers: every artifact, meta.json, manifest.json and the SBOM
        (those present), sorted. build.log is left out: it holds timings."""
        names = {a.name for a in self.artifacts()}
        bad = sorted(n for n in names if not safe_name(n))
        if bad:
            raise InvalidConfigError(f"{self.path / META}: artifact name {bad[0]!r} is not a plain "
                                     "file name")
        names.add(META)
        for extra in (MANIFEST, SBOM):
            if (self.path / extra).is_file():
                names.add(extra)
        return sorted(names)


def load_json(path: Path, *, required: bool) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise UserInputError(f"{path}: not found (is {path.parent} a build's output "
                                 "directory?)") from None
        return None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise InvalidConfigError(f"{path}: cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidConfigError(f"{path}: invalid JSON at line {e.lineno} col {e.colno}: "
                                 f"{e.msg}") from None


def is_sha256(v: Any) -> bool:
    return isinstance(v, str) and bool(_HEX64.match(v))
