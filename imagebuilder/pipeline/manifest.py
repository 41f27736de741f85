"""The manifest: pipelines of stages, content-hash ids, and definition → manifest mapping.

A manifest is what ``imagebuilder manifest`` prints and ``imagebuilder run`` executes
(format in docs/pipeline-contract.md). :func:`resolve` validates it completely — manifest
shape, stage existence, every stage's options against the stage's schema, input
references — before anything runs, and computes the stage ids:

    id = sha256(canonical JSON of {type, options, inputs: {name: input pipeline id},
                base: previous stage id, source_epoch, stage: sha256 of the executable})

A pipeline's id is the id of its last stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from .definition import (
    Definition,
    IgnitionSection,
    DirectorySource,
    MmdebstrapSource,
    OciSource,
    TarballSource,
)
from .stages import StageIndex, StageInfo

MANIFEST_VERSION = "1"

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "name", "pipelines"],
    "properties": {
        "version": {"enum": [MANIFEST_VERSION]},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "source_epoch": {"type": "integer", "minimum": 0},
        "pipelines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "stages"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
                    "id": {"type": "string"},
                    "stages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type"],
                            "properties": {
                                "type": {"type": "string"},
                                "id": {"type": "string"},
                                "options": {"type": "object"},
                                "inputs": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["pipeline"],
                                        "properties": {"pipeline": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "artifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["pipeline", "path", "name"],
                "properties": {
                    "pipeline": {"type": "string"},
                    "path": {"type": "string"},
                    "name": {"type": "string", "pattern": "^[^/]+$"},
                    "format": {"type": "string"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Stage:
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> pipeline name


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Artifact:
    pipeline: str
    path: str  # inside the pipeline's tree
    name: str  # file name in the output directory
    format: str = "raw"


@dataclass(frozen=True)
class Manifest:
    name: str
    pipelines: tuple[Pipeline, ...]
    artifacts: tuple[Artifact, ...] = ()
    source_epoch: int = 0
    version: str = MANIFEST_VERSION

    def pipeline(self, name: str) -> Pipeline:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_json(self, ids: "Resolved | None" = None) -> dict[str, Any]:
        pipelines = []
        for p in self.pipelines:
            stages = []
            for i, s in enumerate(p.stages):
                d: dict[str, Any] = {"type": s.type}
                if ids is not None:
                    d["id"] = ids.stage(p.name, i).id
                d["options"] = s.options
                if s.inputs:
                    d["inputs"] = {k: {"pipeline": v} for k, v in s.inputs.items()}
                stages.append(d)
            pd: dict[str, Any] = {"name": p.name}
            if ids is not None and p.stages:
                pd["id"] = ids.pipeline_id(p.name)
            pd["stages"] = stages
            pipelines.append(pd)
        return {
            "version": self.version,
            "name": self.name,
            "source_epoch": self.source_epoch,
            "pipelines": pipelines,
            "artifacts": [
                {"pipeline": a.pipeline, "path": a.path, "name": a.name, "format": a.format}
                for a in self.artifacts
            ],
        }

    @classmethod
    def from_json(cls, data: Any, origin: str = "manifest") -> "Manifest":
        import jsonschema

        v = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
        errs = sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errs:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errs]
            raise InvalidConfigError(f"{origin}: invalid manifest: " + "; ".join(lines[:5]))
        return cls(
            name=data["name"],
            version=data["version"],
            source_epoch=int(data.get("source_epoch", 0)),
            pipelines=tuple(
                Pipeline(
                    name=p["name"],
                    stages=tuple(
                        Stage(
                            type=s["type"],
                            options=s.get("options") or {},
                            inputs={k: v["pipeline"] for k, v in (s.get("inputs") or {}).items()},
                        )
                        for s in p["stages"]
                    ),
                )
                for p in data["pipelines"]
            ),
            artifacts=tuple(
                Artifact(pipeline=a["pipeline"], path=a["path"], name=a["name"],
                         format=a.get("format", "raw"))
                for a in data.get("artifacts", [])
            ),
        )


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ResolvedStage:
    pipeline: str
    index: int
    stage: Stage
    info: StageInfo
    id: str
    base: str | None  # previous stage id in the pipeline
    inputs: dict[str, str]  # input name -> input pipeline id


@dataclass(frozen=True)
class Resolved:
    """A validated manifest with every stage's id and executable."""

    manifest: Manifest
    stages: dict[tuple[str, int], ResolvedStage]

    def stage(self, pipeline: str, index: int) -> ResolvedStage:
        return self.stages[(pipeline, index)]

    def pipeline_stages(self, pipeline: str) -> list[ResolvedStage]:
        p = self.manifest.pipeline(pipeline)
        return [self.stages[(pipeline, i)] for i in range(len(p.stages))]

    def pipeline_id(self, pipeline: str) -> str:
        p = self.manifest.pipeline(pipeline)
        if not p.stages:
            return hashlib.sha256(b"empty").hexdigest()
        return self.stages[(pipeline, len(p.stages) - 1)].id


def stage_id(*, type: str, options: dict[str, Any], inputs: dict[str, str], base: str | None,
             source_epoch: int, stage_digest: str) -> str:
    return hashlib.sha256(canonical_json({
        "type": type,
        "options": options,
        "inputs": inputs,
        "base": base,
        "source_epoch": source_epoch,
        "stage": stage_digest,
    })).hexdigest()


def resolve(manifest: Manifest, index: StageIndex) -> Resolved:
    """Validate everything up front and compute ids. Raises InvalidConfigError listing all problems."""
    problems: list[str] = []
    names = [p.name for p in manifest.pipelines]
    if len(set(names)) != len(names):
        problems.append("pipeline names must be unique")
    pipeline_ids: dict[str, str] = {}
    stages: dict[tuple[str, int], ResolvedStage] = {}
    for p in manifest.pipelines:
        base: str | None = None
        for i, s in enumerate(p.stages):
            where = f"pipeline {p.name!r}, stage {i} ({s.type})"
            try:
                info = index.get(s.type)
            except InvalidConfigError as e:
                problems.append(f"{where}: {e.message}" + (f" ({e.hint})" if e.hint else ""))
                base = None
                continue
            for path, msg in info.validate(s.options):
                problems.append(f"{where}: options/{path}: {msg}" if path != "(options)"
                                else f"{where}: options: {msg}")
            input_ids: dict[str, str] = {}
            for iname, ref in s.inputs.items():
                if ref not in pipeline_ids:
                    problems.append(
                        f"{where}: input {iname!r} refers to pipeline {ref!r}, which is not defined"
                        " before this pipeline" if ref in names and ref != p.name else
                        f"{where}: input {iname!r} refers to unknown pipeline {ref!r}")
                    continue
                input_ids[iname] = pipeline_ids[ref]
            sid = stage_id(type=s.type, options=s.options, inputs=input_ids, base=base,
                           source_epoch=manifest.source_epoch, stage_digest=info.digest)
            stages[(p.name, i)] = ResolvedStage(p.name, i, s, info, sid, base, input_ids)
            base = sid
        if base is not None:
            pipeline_ids[p.name] = base
    for i, a in enumerate(manifest.artifacts):
        if a.pipeline not in names:
            problems.append(f"artifacts[{i}]: unknown pipeline {a.pipeline!r}")
        if Path(a.path).is_absolute() or ".." in Path(a.path).parts:
            problems.append(f"artifacts[{i}]: path {a.path!r} must be relative to the tree")
    if problems:
        raise InvalidConfigError(
            f"{manifest.name}: manifest has {len(problems)} error(s):\n  " + "\n  ".join(problems))
    return Resolved(manifest, stages)


# --------------------------------------------------------------------------- definition mapping
# GUIDs/UUIDs are derived from the definition's seed by the disk stage (imagebuilder/disk/layout.py);
# the kernel command line finds root and boot by filesystem label (LABEL=root, LABEL=boot).


def source_stage(d: Definition) -> Stage:
    from ..sources import directory, oci, tarball

    src = d.source
    if isinstance(src, MmdebstrapSource):
        opts: dict[str, Any] = {"suite": src.suite, "variant": src.variant,
                                "packages": list(src.packages), "components": list(src.components)}
        if src.mirror:
            opts["mirror"] = src.mirror
        return Stage("org.imagebuilder.source.mmdebstrap", opts)
    if isinstance(src, DirectorySource):
        if src.generator is not None and not src.path.exists():
            from ..run import run

            run([src.generator, src.path])
        return Stage("org.imagebuilder.source.directory",
                     {"path": str(src.path), "fingerprint": directory.fingerprint(src.path)})
    if isinstance(src, TarballSource):
        return Stage("org.imagebuilder.source.tarball",
                     {"path": str(src.path), "sha256": tarball.file_sha256(src.path)})
    if isinstance(src, OciSource):
        return Stage("org.imagebuilder.source.oci",
                     {"path": str(src.path), "digest": oci.image_digest(src.path)})
    raise AssertionError(src)


def kernel_args(d: Definition) -> list[str]:
    """The definition's kernel arguments plus the Ignition platform id (console= is separate)."""
    ign = d.ignition or IgnitionSection()
    return [f"ignition.platform.id={ign.platform}", *d.kernel_args]


def from_definition(d: Definition, index: StageIndex | None = None) -> Manifest:
    """Map an image definition onto the tree → commit → sysroot → image pipelines."""
    from ..ignition.integration import embed_stage_options, files_digest

    ign = d.ignition or IgnitionSection()
    tree = [source_stage(d)]
    integ = "org.imagebuilder.ignition.integration"
    has_integ = index is not None and integ in index.names()
    if d.ignition is not None and d.ignition.config is not None and not has_integ:
        raise InvalidConfigError(
            "ignition.config: embedding an Ignition config in a built image is not yet supported",
            hint="remove ignition.config (platform and firstboot are supported)")
    if d.ignition is not None and has_integ:  # issue 5: OS integration for Debian's Ignition
        tree.append(Stage(integ, {"files_digest": files_digest()}))
    tree.append(Stage("org.imagebuilder.ostree.prepare", {}))
    commit_opts: dict[str, Any] = {"ref": d.ostree.ref}
    if d.ostree.version is not None:
        commit_opts["version"] = d.ostree.version
    pipelines = [
        Pipeline("tree", tuple(tree)),
        Pipeline("commit", (Stage("org.imagebuilder.ostree.commit", commit_opts, {"tree": "tree"}),)),
        Pipeline("sysroot", (
            Stage("org.imagebuilder.ostree.deploy", {
                "osname": d.ostree.osname,
                "ref": d.ostree.ref,
                "kernel_args": kernel_args(d),
                "console": list(d.console),
                "ignition_firstboot": ign.firstboot,
            }, {"repo": "commit"}),
            *([Stage("org.imagebuilder.ignition.embed", embed_stage_options(d.ignition.config))]
              if d.ignition is not None and d.ignition.config is not None else []),
            Stage("org.imagebuilder.grub.config", {"firstboot": ign.firstboot, "console": list(d.console)}),
        )),
        Pipeline("image", (Stage("org.imagebuilder.disk.image", {
            "size": _size_str(d.disk.size),
            "sector_size": int(d.disk.sector_size),
            "root_fs": d.disk.root_fs.value,
            "seed": d.effective_seed,
        }, {"sysroot": "sysroot"}),)),
    ]
    artifacts = tuple(
        Artifact("image", "disk.raw", f"{d.name}.x86_64.{fmt.value}", fmt.value) for fmt in d.outputs
    )
    return Manifest(name=d.name, source_epoch=d.source_epoch, pipelines=tuple(pipelines),
                    artifacts=artifacts)


def _size_str(n: int) -> str:
    for unit, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)
