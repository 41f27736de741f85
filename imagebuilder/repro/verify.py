"""``imagebuilder verify OUTDIR``: does a build's output still match what the build recorded?

Checks, each mismatch one line:

- every artifact meta.json lists exists with the recorded size and sha256 (and, for a
  compressed artifact, the recorded uncompressed sha256/size);
- manifest.json: well-formed, its sha256 (ids left out) is meta.json's ``manifest_sha256``,
  every pipeline id is its last stage's id, and the stage/pipeline ids agree with meta.json.
  The ids are then recomputed with :func:`imagebuilder.pipeline.manifest.resolve`. A stage
  id covers the digest of the stage's code, which manifest.json does not record, so the
  recomputation is exact only when this imagebuilder's stage code is the build's; otherwise
  the ids are reported as "consistent with the manifest's inputs" (the chain checks above)
  plus a note naming the first stage whose code differs;
- disk images: the GPT read back (:mod:`imagebuilder.image.inspect`, our GPT reader) equals
  meta.json's partition table (disk and partition GUIDs, types, names, LBAs, attributes,
  geometry) and each filesystem's type/label/UUID its record; the deployment's OSTree
  commit (the BLS ``ostree=`` link resolved on the root filesystem) and version are
  meta.json's, and every recorded kernel argument is on the BLS entry;
- with trusted public keys: SHA256SUMS.sig is a valid signature of SHA256SUMS by one of
  them, SHA256SUMS covers every artifact, meta.json and manifest.json, and every file it
  lists has its hash.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ImageBuilderError, InvalidConfigError
from ..sources.tarball import file_sha256
from . import sshsig
from .outdir import MANIFEST, META, SUMS, ArtifactRecord, OutDir, is_sha256, safe_name

DISK_FORMATS = {"raw", "qcow2", "vmdk", "vhd", "vhdx", "vpc", "vdi"}
_DECOMPRESSORS = ((b"\x1f\x8b", gzip.open), (b"\xfd7zXZ\x00", lzma.open), (b"BZh", bz2.open))


@dataclass
class VerifyReport:
    outdir: Path
    artifacts: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    signer: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, msg: str) -> None:
        self.problems.append(msg)

    def to_dict(self) -> dict[str, Any]:
        return {"outdir": str(self.outdir), "verified": self.ok, "artifacts": self.artifacts,
                "problems": self.problems, "notes": self.notes, "checked": self.checked,
                "signer": self.signer}


class _Hashes:
    """sha256 of OUTDIR files, each computed once."""

    def __init__(self, root: Path):
        self.root, self._d = root, {}

    def __call__(self, name: str) -> str:
        if name not in self._d:
            self._d[name] = file_sha256(self.root / name)
        return self._d[name]


def _uncompressed(path: Path) -> tuple[int, str] | None:
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _DECOMPRESSORS:
        if head.startswith(magic):
            h = hashlib.sha256()
            n = 0
            with opener(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    n += len(chunk)
            return n, h.hexdigest()
    return None


def check_artifacts(od: OutDir, rep: VerifyReport, hashes: _Hashes) -> list[ArtifactRecord]:
    arts = od.artifacts()
    if not arts:
        rep.problem(f"{od.path / META}: lists no artifacts")
    good = []
    for a in arts:
        where = od.path / a.name if safe_name(a.name) else od.path / META
        if not safe_name(a.name):
            rep.problem(f"{where}: artifact name {a.name!r} is not a plain file name")
            continue
        p = od.path / a.name
        if not p.is_file() or p.is_symlink():
            rep.problem(f"{p}: missing (listed in meta.json)")
            continue
        if not is_sha256(a.sha256):
            rep.problem(f"{p}: meta.json records no valid sha256 for it")
            continue
        size = p.stat().st_size
        if a.size is not None and size != a.size:
            rep.problem(f"{p}: size {size} differs from meta.json's {a.size}")
        got = hashes(a.name)
        if got != a.sha256:
            rep.problem(f"{p}: sha256 {got} differs from meta.json's {a.sha256}")
            continue
        if a.uncompressed_sha256 is not None:
            try:
                u = _uncompressed(p)
            except (OSError, EOFError, lzma.LZMAError) as e:
                rep.problem(f"{p}: cannot decompress: {e}")
                continue
            if u is None:
                rep.notes.append(f"{p}: uncompressed sha256 recorded but the compression is not "
                                 "gzip/xz/bzip2; not checked")
            elif u[1] != a.uncompressed_sha256 or (a.uncompressed_size not in (None, u[0])):
                rep.problem(f"{p}: uncompressed sha256 {u[1]} ({u[0]} bytes) differs from "
                            f"meta.json's {a.uncompressed_sha256}")
        rep.artifacts += 1
        good.append(a)
    rep.checked.append("artifacts")
    return good


# --------------------------------------------------------------------------- manifest ids


class _DigestIndex:
    """A StageIndex whose code digests come from the manifest where it records them."""

    def __init__(self, index, digests: dict[str, str]):
        self.index, self.digests = index, digests

    def get(self, name: str):
        info = self.index.get(name)
        d = self.digests.get(name)
        return replace(info, digest=d) if d else info

    def names(self) -> list[str]:
        return self.index.names()


def check_manifest(od: OutDir, rep: VerifyReport, index=None) -> None:
    from ..pipeline.manifest import Manifest, canonical_json, resolve

    path = od.path / MANIFEST
    data = od.manifest
    if data is None:
        rep.problem(f"{path}: missing")
        return
    recorded: dict[tuple[str, int], str] = {}
    pipeline_ids: dict[str, str] = {}
    digests: dict[str, str] = {}
    stripped = dict(data)
    pipes = data.get("pipelines")
    if isinstance(pipes, list):
        stripped["pipelines"] = []
        for p in pipes:
            if not isinstance(p, dict):
                stripped["pipelines"].append(p)
                continue
            pp = dict(p)
            if isinstance(pp.get("id"), str):
                pipeline_ids[str(pp.get("name"))] = pp.pop("id")
            stages = []
            for i, s in enumerate(pp.get("stages") or []):
                if isinstance(s, dict):
                    s = dict(s)
                    if isinstance(s.get("id"), str):
                        recorded[(str(pp.get("name")), i)] = s.pop("id")
                    d = s.pop("digest", None)
                    if isinstance(d, str) and isinstance(s.get("type"), str):
                        digests[s["type"]] = d
                stages.append(s)
            pp["stages"] = stages
            stripped["pipelines"].append(pp)
    try:
        m = Manifest.from_json(stripped, origin=str(path))
    except InvalidConfigError as e:
        rep.problem(e.message)
        return
    build = od.meta.get("build") if isinstance(od.meta.get("build"), dict) else {}
    want = build.get("manifest_sha256")
    got = hashlib.sha256(canonical_json(m.to_json())).hexdigest()
    if want is None:
        rep.notes.append(f"{od.path / META}: no build.manifest_sha256 recorded")
    elif want != got:
        rep.problem(f"{path}: sha256 {got} (ids left out) differs from meta.json's "
                    f"build.manifest_sha256 {want}")
    # the id chain as recorded: pipeline id = last stage id; meta.json agrees
    for p in m.pipelines:
        if p.stages and p.name in pipeline_ids and pipeline_ids[p.name] != recorded.get((p.name, len(p.stages) - 1)):
            rep.problem(f"{path}: pipeline {p.name}: id {pipeline_ids[p.name]} is not its last "
                        "stage's id")
    for p, pid in (build.get("pipelines") or {}).items():
        if p in pipeline_ids and pipeline_ids[p] != pid:
            rep.problem(f"{path}: pipeline {p}: id {pipeline_ids[p]} differs from meta.json's {pid}")
    for st in build.get("stages") or []:
        if not isinstance(st, dict):
            continue
        key = (st.get("pipeline"), st.get("index"))
        if key in recorded and recorded[key] != st.get("id"):
            rep.problem(f"{path}: pipeline {key[0]} stage {key[1]}: id {recorded[key]} differs "
                        f"from meta.json's {st.get('id')}")
    # recompute with this imagebuilder's stage code (or the digests the manifest records)
    try:
        if index is None:
            from ..pipeline.stages import StageIndex

            index = StageIndex()
        resolved = resolve(m, _DigestIndex(index, digests))
    except ImageBuilderError as e:
        rep.notes.append(f"{path}: ids not recomputed ({e.message.splitlines()[0]})")
        rep.checked.append("manifest")
        return
    first_diff: dict[str, str] = {}
    for (pname, i), rid in sorted(recorded.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        rs = resolved.stages.get((pname, i))
        if rs is None:
            rep.problem(f"{path}: id recorded for pipeline {pname} stage {i}, which does not exist")
        elif rs.id != rid and pname not in first_diff:
            first_diff[pname] = f"{pname}/{i} {rs.stage.type}"
    if first_diff and len(digests) == len({s.type for p in m.pipelines for s in p.stages}):
        for where in first_diff.values():
            rep.problem(f"{path}: stage {where}: recorded id differs from the recomputed one")
    elif first_diff:
        rep.notes.append(
            f"{path}: ids are consistent with the manifest's inputs, but this imagebuilder's stage "
            "code differs from the build's (first differing stage per pipeline: "
            + ", ".join(first_diff.values()) + ")")
    else:
        rep.notes.append(f"{path}: every stage id recomputed")
    rep.checked.append("manifest")


# --------------------------------------------------------------------------- the image


_ID_KEYS = {"disk_guid", "guid", "type_guid", "uuid"}  # GUIDs compare case-insensitively


def _same(key: str, a: Any, b: Any) -> bool:
    if key in _ID_KEYS and isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def compare_table(rec: dict[str, Any], got: dict[str, Any], where: str, rep: VerifyReport) -> None:
    for k in ("label", "disk_guid", "sector_size", "size", "first_usable_lba", "last_usable_lba"):
        if k in rec and not _same(k, rec[k], got.get(k)):
            rep.problem(f"{where}: partition table {k} {got.get(k)} differs from meta.json's {rec[k]}")
    recparts = {p.get("number"): p for p in rec.get("partitions") or [] if isinstance(p, dict)}
    gotparts = {p["number"]: p for p in got.get("partitions") or []}
    for n in sorted(set(recparts) | set(gotparts), key=lambda x: (not isinstance(x, int), str(x))):
        rp, gp = recparts.get(n), gotparts.get(n)
        if rp is None:
            rep.problem(f"{where}: partition {n} is not in meta.json's partition table")
            continue
        if gp is None:
            rep.problem(f"{where}: partition {n} of meta.json's partition table is missing")
            continue
        for k in ("name", "type_guid", "guid", "start_lba", "last_lba", "attributes"):
            if k in rp and not _same(k, rp[k], gp.get(k)):
                rep.problem(f"{where}: partition {n} {k} {gp.get(k)} differs from meta.json's {rp[k]}")
        rfs, gfs = rp.get("filesystem"), gp.get("filesystem") or {}
        if isinstance(rfs, dict):
            for k in ("type", "label", "uuid"):
                if k in rfs and not _same(k, rfs[k], gfs.get(k)):
                    rep.problem(f"{where}: partition {n} filesystem {k} {gfs.get(k)} differs from "
                                f"meta.json's {rfs[k]}")


def check_image(od: OutDir, a: ArtifactRecord, rep: VerifyReport) -> None:
    from ..image.inspect import inspect_image

    p = od.path / a.name
    table = od.meta.get("partition_table")
    try:
        img = inspect_image(p)
    except ImageBuilderError as e:
        rep.problem(f"{p}: cannot read the image: {e.message}")
        return
    if isinstance(table, dict):
        compare_table(table, img["partition_table"], str(p), rep)
    ost = od.meta.get("ostree")
    deps = img.get("deployments") or []
    if isinstance(ost, dict) and ost.get("commit"):
        commits = [d.get("commit") for d in deps]
        if not deps:
            rep.problem(f"{p}: no OSTree deployment found (meta.json records commit {ost['commit']})")
        elif ost["commit"] not in commits:
            if all(c is None for c in commits):
                rep.notes.append(f"{p}: deployment commit not readable (root filesystem is not ext4)")
            else:
                rep.problem(f"{p}: deployed OSTree commit {', '.join(map(str, commits))} differs "
                            f"from meta.json's {ost['commit']}")
        else:
            d = deps[commits.index(ost["commit"])]
            if ost.get("version") is not None and d.get("version") not in (None, ost["version"]):
                rep.problem(f"{p}: deployed OSTree version {d.get('version')} differs from "
                            f"meta.json's {ost['version']}")
    kargs = od.meta.get("kernel_args")
    entries = (img.get("boot") or {}).get("entries") or []
    if isinstance(kargs, list) and entries:
        for e in entries:
            have = set(e.get("options", "").split())
            missing = [k for k in kargs if isinstance(k, str) and k not in have]
            if missing:
                rep.problem(f"{p}: BLS entry {e.get('file')}: kernel argument(s) "
                            f"{' '.join(missing)} of meta.json missing")
    rep.checked.append(f"image {a.name}")


# --------------------------------------------------------------------------- signature


def check_signature(od: OutDir, allowed: list[sshsig.PublicKey], rep: VerifyReport,
                    hashes: _Hashes) -> None:
    from .sign import verify_signature

    try:
        signer, sums = verify_signature(od.path, allowed)
    except ImageBuilderError as e:
        rep.problem(e.message)
        return
    rep.signer = signer.fingerprint
    for name in od.signed_names():
        if name not in sums:
            rep.problem(f"{od.path / SUMS}: does not cover {name}")
    for name, digest in sorted(sums.items()):
        p = od.path / name
        if not p.is_file() or p.is_symlink():
            rep.problem(f"{p}: missing (listed in {SUMS})")
        elif hashes(name) != digest:
            rep.problem(f"{p}: sha256 {hashes(name)} differs from the signed {SUMS}'s {digest}")
    rep.checked.append("signature")


def verify_outdir(outdir: str | Path, *, allowed: list[sshsig.PublicKey] | None = None,
                  images: bool = True, index=None) -> VerifyReport:
    od = OutDir.load(outdir)
    rep = VerifyReport(od.path)
    hashes = _Hashes(od.path)
    good = check_artifacts(od, rep, hashes)
    check_manifest(od, rep, index)
    if images:
        for a in good:
            fmt = (a.format or "raw").lower()
            if fmt in DISK_FORMATS and isinstance(od.meta.get("partition_table"), dict):
                check_image(od, a, rep)
    if allowed is not None:
        check_signature(od, allowed, rep, hashes)
    return rep
