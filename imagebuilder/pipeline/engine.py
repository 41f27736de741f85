"""The build engine: runs a resolved manifest against the object store.

For each pipeline the artifacts need (manifest order; inputs refer to earlier pipelines):

1. if the pipeline's last stage id is in the store, the stored tree *is* the result
   (used in place, read-only, as other pipelines' input or artifact source);
2. otherwise the longest cached prefix is restored into a workspace tree and only the
   remaining stages run, each committed to the store as it finishes (all stages by
   default, or only the ``checkpoints`` ones). The last stage's tree is *moved* into the
   store rather than copied.

Stages run as ``sys.executable STAGE ARGS.json`` in their own process group, with stdout
and stderr appended to the build log; a failing stage's log tail is shown. Outputs are
assembled in a hidden sibling directory of OUTDIR and renamed into place only when
everything succeeded, so a failed or interrupted build leaves no partial output.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__
from ..errors import BadImageError, ToolError, UserInputError
from ..run import output as run_output
from ..run import tool_version, which
from .manifest import Resolved, ResolvedStage, canonical_json
from .progress import NullProgress, Progress
from .stageapi import RECORD_DIR
from .store import Store, rmtree, unmount_under

LOG_TAIL_LINES = 30
KILL_GRACE_SECONDS = 10


class StageFailed(ToolError):
    """A stage exited non-zero (its output is in the build log)."""


@dataclass
class StageRun:
    pipeline: str
    index: int
    type: str
    id: str
    status: str  # "cached" | "ran"
    seconds: float = 0.0  # running the stage
    store_seconds: float = 0.0  # checkpointing its tree into the store


@dataclass
class BuildResult:
    name: str
    outdir: Path
    seconds: float
    stages: list[StageRun]
    artifacts: list[dict[str, Any]]
    meta: dict[str, Any]
    log: Path
    store: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outdir": str(self.outdir),
            "seconds": round(self.seconds, 3),
            "artifacts": self.artifacts,
            "stages": [asdict(s) | {"seconds": round(s.seconds, 3), "store_seconds": round(s.store_seconds, 3)} for s in self.stages],
            "log": str(self.log),
            "store": str(self.store),
        }


@dataclass(frozen=True)
class BuildOptions:
    cache: Path
    outdir: Path
    force: bool = False
    checkpoints: tuple[str, ...] = ()  # empty: checkpoint every stage


def needed_pipelines(resolved: Resolved) -> list[str]:
    """Pipelines the artifacts depend on, in manifest order (all if there are no artifacts)."""
    m = resolved.manifest
    if not m.artifacts:
        return [p.name for p in m.pipelines]
    want = {a.pipeline for a in m.artifacts}
    for p in reversed(m.pipelines):
        if p.name in want:
            for s in p.stages:
                want.update(s.inputs.values())
    return [p.name for p in m.pipelines if p.name in want]


def is_checkpoint(rs: ResolvedStage, last: bool, checkpoints: tuple[str, ...]) -> bool:
    """Should this stage's tree be stored? Patterns are globs (as in osbuild) over pipeline
    names (meaning the pipeline's last stage), stage types and stage ids (or an id prefix
    of at least 8 characters); no patterns, or ``all``, stores every stage."""
    if not checkpoints or "all" in checkpoints:
        return True
    for c in checkpoints:
        if last and fnmatch.fnmatchcase(rs.pipeline, c):
            return True
        if fnmatch.fnmatchcase(rs.stage.type, c) or fnmatch.fnmatchcase(rs.id, c):
            return True
        if len(c) >= 8 and rs.id.startswith(c):
            return True
    return False


def _tail(path: Path, start: int, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _extents(fd: int, size: int):
    """Yield (start, end, is_data) runs of a file, using SEEK_DATA/SEEK_HOLE."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            data = size
        if data > pos:
            yield pos, data, False
        if data >= size:
            return
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            hole = size
        yield data, hole, True
        pos = hole


def _sha256_sparse(src: Path) -> str:
    h = hashlib.sha256()
    zeros = bytes(1 << 20)
    with open(src, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        for start, end, is_data in list(_extents(f.fileno(), size)):
            if not is_data:
                n = end - start
                while n:
                    k = min(n, len(zeros))
                    h.update(zeros[:k] if k < len(zeros) else zeros)
                    n -= k
                continue
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, 4 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def _copy_sparse(src: Path, dest: Path) -> int:
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        for start, end, is_data in list(_extents(fi.fileno(), size)):
            if not is_data:
                continue
            off = start
            while off < end:
                try:
                    n = os.copy_file_range(fi.fileno(), fo.fileno(), end - off, off, off)
                except OSError:
                    n = 0
                if n == 0:  # not supported here: plain read/write
                    fi.seek(off)
                    fo.seek(off)
                    chunk = fi.read(min(4 << 20, end - off))
                    if not chunk:
                        break
                    fo.write(chunk)
                    n = len(chunk)
                off += n
        fo.truncate(size)
        fo.flush()
        os.fsync(fo.fileno())
    os.chmod(dest, 0o644)
    return size


def copy_and_hash(src: Path, dest: Path, *, want_hash: bool = True) -> tuple[int, str | None]:
    """Copy a (sparse) file keeping its holes, hashing it (sha256) at the same time.

    The copy runs in the kernel (copy_file_range over the data extents) while a thread
    hashes the file (hashlib releases the GIL), so the cost is max(copy, hash), not the sum.
    """
    if not want_hash:
        return _copy_sparse(src, dest), None
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = pool.submit(_sha256_sparse, src)
        size = _copy_sparse(src, dest)
        return size, digest.result()


def _tool_versions(stage_types: set[str]) -> dict[str, str]:
    versions = {"imagebuilder": __version__, "python": platform.python_version()}
    if which("ostree"):
        with contextlib.suppress(Exception):
            out = run_output(["ostree", "--version"])
            for line in out.splitlines():
                if "Version:" in line:
                    versions["ostree"] = line.split(":", 1)[1].strip().strip("'")
    tools = ["grub-mkimage", "sgdisk", "cp"]
    if any("mmdebstrap" in t for t in stage_types):
        tools.insert(0, "mmdebstrap")  # perl: ~0.5 s, only when used
    for tool in tools:
        v = tool_version(tool)
        if v:
            versions[tool] = v
    # filesystem tools decide the image bytes; they do not all know --version
    if which("dpkg-query"):
        with contextlib.suppress(Exception):
            out = run_output(["dpkg-query", "-W", "-f", "${Package} ${Version}\n",
                              "e2fsprogs", "xfsprogs", "dosfstools", "grub-common"], check=False)
            for line in out.splitlines():
                pkg, _, ver = line.partition(" ")
                if ver.strip():
                    versions[f"deb:{pkg}"] = ver.strip()
    return versions


def _collect_records(tree: Path) -> dict[str, Any]:
    records: dict[str, Any] = {}
    d = tree / RECORD_DIR
    if d.is_dir() and not d.is_symlink():
        for f in sorted(d.glob("*.json")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                records[f.stem] = json.loads(f.read_text())
    return records


def _die_with_parent() -> None:
    """In the stage process: get SIGKILL if the engine dies (even by SIGKILL), no orphans."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Terminated(BaseException):
    """SIGTERM during a build: unwind like Ctrl-C so nothing partial is left."""


class Engine:
    def __init__(self, resolved: Resolved, options: BuildOptions, progress: Progress | None = None):
        self.resolved = resolved
        self.opts = options
        self.progress = progress or NullProgress()
        self.store = Store(options.cache)

    # ------------------------------------------------------------------ public
    def build(self) -> BuildResult:
        m = self.resolved.manifest
        outdir = self.opts.outdir.absolute()
        if outdir.exists() and not self.opts.force:
            raise UserInputError(f"{outdir}: output directory exists", hint="use --force (-f) to replace it")
        outdir.parent.mkdir(parents=True, exist_ok=True)
        staging = outdir.parent / f".{outdir.name}.tmp-{uuid.uuid4().hex[:8]}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log = self.store.root / "logs" / f"{m.name}-{stamp}-{uuid.uuid4().hex[:6]}.log"
        t0 = time.monotonic()
        old_term = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            raise _Terminated()

        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, on_term)
        try:
            staging.mkdir()
            with open(log, "ab", buffering=0) as logf, self.store.tempdir("build") as ws:
                logf.write(f"imagebuilder {__version__}: building {m.name}\n".encode())
                runs, trees = self._run(ws, logf, log)
                artifacts = self._export(trees, staging)
                meta = self._meta(runs, trees, artifacts)
            meta["build"]["seconds"] = round(time.monotonic() - t0, 3)
            (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            (staging / "manifest.json").write_text(
                json.dumps(m.to_json(self.resolved), indent=2) + "\n")
            shutil.move(log, staging / "build.log")
            self._publish(staging, outdir)
        except _Terminated:
            rmtree(staging)
            raise KeyboardInterrupt from None
        except BaseException:
            rmtree(staging)
            raise
        finally:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, old_term)
        result = BuildResult(name=m.name, outdir=outdir, seconds=time.monotonic() - t0, stages=runs,
                             artifacts=artifacts, meta=meta, log=outdir / "build.log",
                             store=self.store.root)
        self.progress.build_finished(result)
        return result

    # ------------------------------------------------------------------ internals
    def _plan(self, pipelines: list[str]) -> tuple[int, int]:
        total = cached = 0
        for p in pipelines:
            stages = self.resolved.pipeline_stages(p)
            total += len(stages)
            if stages and self.store.contains(stages[-1].id):
                cached += len(stages)
                continue
            for i in range(len(stages) - 1, -1, -1):
                if self.store.contains(stages[i].id):
                    cached += i + 1
                    break
        return total, cached

    def _uncached_needs(self, pipelines: list[str]) -> list[str]:
        """Drop pipelines needed only as inputs of pipelines whose result is already cached."""
        m = self.resolved.manifest
        want = {a.pipeline for a in m.artifacts} or set(pipelines)
        for p in reversed(pipelines):
            if p not in want:
                continue
            stages = self.resolved.pipeline_stages(p)
            if stages and self.store.contains(stages[-1].id):
                continue  # its tree comes from the store: its inputs are not needed
            for rs in stages:
                want.update(rs.stage.inputs.values())
        return [p for p in pipelines if p in want]

    def _run(self, ws: Path, logf: BinaryIO, log: Path) -> tuple[list[StageRun], dict[str, Path]]:
        pipelines = self._uncached_needs(needed_pipelines(self.resolved))
        total, cached = self._plan(pipelines)
        self.progress.build_started(self.resolved.manifest.name, total, cached)
        runs: list[StageRun] = []
        trees: dict[str, Path] = {}
        for p in pipelines:
            stages = self.resolved.pipeline_stages(p)
            if not stages:
                trees[p] = ws / f"{p}.empty"
                trees[p].mkdir()
                continue
            if self.store.contains(stages[-1].id):
                for rs in stages:
                    runs.append(StageRun(p, rs.index, rs.stage.type, rs.id, "cached"))
                    self.progress.stage_cached(rs)
                trees[p] = self.store.object_tree(stages[-1].id)
                continue
            tree = ws / f"{p}.tree"
            start = 0
            for i in range(len(stages) - 1, -1, -1):
                if self.store.contains(stages[i].id):
                    self.progress.message(f"restoring {p}/{i} from the cache")
                    self.store.restore(stages[i].id, tree)
                    start = i + 1
                    break
            else:
                tree.mkdir()
            for rs in stages[:start]:
                runs.append(StageRun(p, rs.index, rs.stage.type, rs.id, "cached"))
                self.progress.stage_cached(rs)
            for rs in stages[start:]:
                inputs = {name: trees[ref] for name, ref in rs.stage.inputs.items()}
                seconds = self._run_stage(rs, tree, inputs, ws, logf, log)
                run = StageRun(p, rs.index, rs.stage.type, rs.id, "ran", seconds)
                runs.append(run)
                last = rs.index == len(stages) - 1
                if is_checkpoint(rs, last, self.opts.checkpoints):
                    meta = {"type": rs.stage.type, "pipeline": p, "index": rs.index,
                            "seconds": round(seconds, 3)}
                    t0 = time.monotonic()
                    if last:
                        if self.store.commit(rs.id, tree, move=True, meta=meta):
                            tree = self.store.object_tree(rs.id)
                    else:
                        self.store.commit(rs.id, tree, meta=meta)
                    run.store_seconds = time.monotonic() - t0
                    if run.store_seconds >= 0.5:
                        self.progress.message(f"stored {p}/{rs.index} in {run.store_seconds:.2f} s")
            trees[p] = tree
        return runs, trees

    def _run_stage(self, rs: ResolvedStage, tree: Path, inputs: dict[str, Path], ws: Path,
                   logf: BinaryIO, log: Path) -> float:
        m = self.resolved.manifest
        workdir = ws / f"work-{rs.id[:16]}"
        workdir.mkdir()
        args_path = ws / f"args-{rs.id[:16]}.json"
        args_path.write_text(json.dumps({
            "tree": str(tree),
            "options": rs.stage.options,
            "inputs": {k: str(v) for k, v in inputs.items()},
            "workdir": str(workdir),
            "meta": {"id": rs.id, "source_epoch": m.source_epoch},
        }, indent=2))
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["SOURCE_DATE_EPOCH"] = str(m.source_epoch)
        env["IMAGEBUILDER_STAGE_ID"] = rs.id
        header = f"\n==> {rs.pipeline}/{rs.index} {rs.stage.type} {rs.id}\n"
        logf.write(header.encode())
        offset = logf.tell() if hasattr(logf, "tell") else 0
        self.progress.stage_started(rs)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, str(rs.info.path), str(args_path)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=workdir, env=env, start_new_session=True, preexec_fn=_die_with_parent,
        )
        try:
            rc = proc.wait()
        except BaseException:
            self._kill(proc)
            logf.write(b"\n==> interrupted\n")
            raise
        finally:
            leaked = unmount_under(tree) + unmount_under(workdir)
            if leaked:
                logf.write(f"==> the stage left mounts behind; detached: {', '.join(leaked)}\n".encode())
                self.progress.message(f"{rs.stage.type} left {len(leaked)} mount(s) behind (detached)")
            rmtree(workdir)
            with contextlib.suppress(FileNotFoundError):
                args_path.unlink()
        seconds = time.monotonic() - t0
        logf.write(f"==> exit status {rc} after {seconds:.2f} s\n".encode())
        if rc != 0:
            tail = _tail(log, offset)
            self.progress.stage_failed(rs, seconds, tail, str(log))
            how = f"was killed by signal {-rc}" if rc < 0 else f"failed with exit status {rc}"
            raise StageFailed(
                f"stage {rs.stage.type} (pipeline {rs.pipeline!r}, stage {rs.index}) {how}",
                returncode=rc, stderr=tail, hint=f"full log: {log}")
        self.progress.stage_finished(rs, seconds)
        return seconds

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _export(self, trees: dict[str, Path], staging: Path) -> list[dict[str, Any]]:
        out = []
        for a in self.resolved.manifest.artifacts:
            root = Path(os.path.realpath(trees[a.pipeline]))
            src = Path(os.path.realpath(root / a.path))  # symlinks must stay inside the tree
            if not src.is_relative_to(root) or not src.is_file():
                raise BadImageError(
                    f"artifact {a.name}: pipeline {a.pipeline!r} produced no file {a.path!r}")
            self.progress.message(f"exporting {a.name}")
            size, digest = self._export_one(a.pipeline, a.path, src, staging / a.name)
            out.append({"name": a.name, "format": a.format, "size": size, "sha256": digest,
                        "pipeline": a.pipeline})
        return out

    def _export_one(self, pipeline: str, path: str, src: Path, dest: Path) -> tuple[int, str]:
        """Copy one artifact; its sha256 is remembered beside a stored (immutable) object."""
        oid = self.resolved.pipeline_id(pipeline)
        stored = self.store.contains(oid) and src.is_relative_to(
            Path(os.path.realpath(self.store.object_tree(oid))))
        digests = self.store.object_dir(oid) / "artifacts.json"
        known: dict[str, Any] = {}
        if stored:
            with contextlib.suppress(OSError, json.JSONDecodeError):
                known = json.loads(digests.read_text())
        st = src.stat()
        entry = known.get(path)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            size, _ = copy_and_hash(src, dest, want_hash=False)
            return size, entry["sha256"]
        size, digest = copy_and_hash(src, dest)
        assert digest is not None
        if stored:
            known[path] = {"size": size, "sha256": digest, "mtime_ns": st.st_mtime_ns}
            with contextlib.suppress(OSError), self.store.lock(oid):
                tmp = digests.with_name(f".artifacts.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_text(json.dumps(known, indent=2) + "\n")
                os.replace(tmp, digests)
        return size, digest

    def _meta(self, runs: list[StageRun], trees: dict[str, Path],
              artifacts: list[dict[str, Any]]) -> dict[str, Any]:
        m = self.resolved.manifest
        records: dict[str, Any] = {}
        for p in needed_pipelines(self.resolved):
            if p in trees:  # inputs of cached pipelines are skipped (see _uncached_needs)
                records.update(_collect_records(trees[p]))
        kargs = None
        deploy = records.get("deploy")
        if isinstance(deploy, dict):
            kargs = deploy.get("kargs") or deploy.get("kernel_args")
        if kargs is None:
            for p in m.pipelines:
                for s in p.stages:
                    if "kernel_args" in s.options:
                        kargs = s.options["kernel_args"]
        return {
            "name": m.name,
            "artifacts": artifacts,
            "ostree": records.get("ostree"),
            "kernel_args": kargs,
            "partition_table": records.get("disk"),
            "tool_versions": _tool_versions({s.type for p in m.pipelines for s in p.stages}),
            "records": records,
            "build": {
                "source_epoch": m.source_epoch,
                "manifest_sha256": hashlib.sha256(canonical_json(m.to_json())).hexdigest(),
                "pipelines": {p: self.resolved.pipeline_id(p) for p in needed_pipelines(self.resolved)},
                "stages": [asdict(r) | {"seconds": round(r.seconds, 3), "store_seconds": round(r.store_seconds, 3)} for r in runs],
            },
        }

    def _publish(self, staging: Path, outdir: Path) -> None:
        if not outdir.exists():
            os.rename(staging, outdir)
            return
        if not self.opts.force:
            raise UserInputError(f"{outdir}: output directory exists", hint="use --force (-f) to replace it")
        old = outdir.parent / f".{outdir.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(outdir, old)
        os.rename(staging, outdir)
        rmtree(old)
