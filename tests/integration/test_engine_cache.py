"""The engine end to end with small real stages (a temp stages dir via IMAGEBUILDER_STAGES_DIR):
cache hits and misses, failure reporting, SIGKILL/SIGINT/concurrency safety of the store and
of the output directory."""

from __future__ import annotations

import copy
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEP = r'''#!/usr/bin/env python3
import os, subprocess, sys, time
from pathlib import Path
from imagebuilder.pipeline.stageapi import stage_main

def main(args):
    o = args.options
    if o.get("pidfile"):
        Path(o["pidfile"]).write_text(str(os.getpid()))
    while o.get("hold_while") and os.path.exists(o["hold_while"]):
        time.sleep(0.05)
    for name, text in o.get("files", {}).items():
        p = args.tree / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for i in range(o.get("bulk", 0)):
        d = args.tree / "bulk" / str(i % 50)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(2048))
    for name, src in sorted(args.inputs.items()):
        listing = sorted(p.name for p in src.iterdir())
        data = (src / "data").read_text() if (src / "data").exists() else ""
        (args.tree / "data").write_text(
            ((args.tree / "data").read_text() if (args.tree / "data").exists() else "")
            + f"{name}:{','.join(listing)}:{data}\n")
    if o.get("bind"):  # a stage that leaks a bind mount (like a chroot helper killed mid-way)
        (args.tree / "bound").mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", o["bind"], str(args.tree / "bound")], check=True)
    if o.get("selfkill"):
        os.kill(os.getpid(), 9)
    if o.get("fail"):
        print("boom: failing as asked", file=sys.stderr)
        sys.exit(3)
    args.record("step", {"last": o.get("files", {})})

stage_main(main)
'''

SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "bulk": {"type": "integer", "minimum": 0},
        "fail": {"type": "boolean"},
        "pidfile": {"type": "string"},
        "hold_while": {"type": "string"},
        "bind": {"type": "string"},
        "selfkill": {"type": "boolean"},
    },
}
STEP_TYPE = "org.imagebuilder.test.step"


def step(files: dict | None = None, inputs: dict | None = None, **opts) -> dict:
    s = {"type": STEP_TYPE, "options": {"files": files or {}, **opts}}
    if inputs:
        s["inputs"] = {k: {"pipeline": v} for k, v in inputs.items()}
    return s


def base_manifest() -> dict:
    return {
        "version": "1", "name": "demo", "source_epoch": 0,
        "pipelines": [
            {"name": "a", "stages": [step({"data": "a0"}), step({"x": "1"}), step({"y": "2"})]},
            {"name": "b", "stages": [step({"z": "3"}, inputs={"a": "a"}), step({"disk.raw": "image v1"})]},
        ],
        "artifacts": [{"pipeline": "b", "path": "disk.raw", "name": "demo.raw", "format": "raw"}],
    }


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.stages = tmp / "stages"
        self.stages.mkdir()
        exe = self.stages / STEP_TYPE
        exe.write_text(STEP)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        (self.stages / f"{STEP_TYPE}.meta.json").write_text(
            json.dumps({"summary": "test step", "description": "", "schema": SCHEMA}))
        self.cache = tmp / "cache"
        self.env = dict(os.environ, IMAGEBUILDER_STAGES_DIR=str(self.stages))
        self.n = 0

    def write_manifest(self, m: dict) -> Path:
        self.n += 1
        p = self.tmp / f"manifest{self.n}.json"
        p.write_text(json.dumps(m))
        return p

    def argv(self, m: dict, out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "imagebuilder", "run", str(self.write_manifest(m)),
                "--cache", str(self.cache), "-o", str(out), "--json", *extra]

    def run(self, m: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(m, out, *extra), capture_output=True, text=True,
                              env=self.env, timeout=300)

    def start(self, m: dict, out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(m, out, *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def build(self, m: dict, out: Path, *extra: str) -> dict:
        r = self.run(m, out, *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def objects(self) -> list[str]:
        d = self.cache / "objects"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def assert_store_consistent(self) -> None:
        for oid in self.objects():
            assert (self.cache / "objects" / oid / "object.json").is_file(), f"partial object {oid}"
            assert (self.cache / "objects" / oid / "tree").is_dir()


def statuses(summary: dict) -> dict[str, str]:
    return {f"{s['pipeline']}/{s['index']}": s["status"] for s in summary["stages"]}


def wait_for(path: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def test_cold_warm_and_partial_rebuilds(env, tmp_path):
    m = base_manifest()
    cold = env.build(m, tmp_path / "out1")
    assert set(statuses(cold).values()) == {"ran"}
    assert len(env.objects()) == 5
    out1 = tmp_path / "out1"
    assert (out1 / "demo.raw").read_text() == "image v1"
    meta = json.loads((out1 / "meta.json").read_text())
    assert meta["artifacts"][0]["sha256"] == cold["artifacts"][0]["sha256"]
    assert meta["records"]["step"] == {"last": {"disk.raw": "image v1"}}
    assert "==> b/1 org.imagebuilder.test.step" in (out1 / "build.log").read_text()
    assert json.loads((out1 / "manifest.json").read_text())["pipelines"][0]["stages"][0]["id"]

    warm = env.build(m, tmp_path / "out2")
    assert set(statuses(warm).values()) == {"cached"}
    assert warm["artifacts"] == cold["artifacts"]

    # change the last stage of b: only that stage reruns, from b/0 restored
    m2 = copy.deepcopy(m)
    m2["pipelines"][1]["stages"][1]["options"]["files"]["disk.raw"] = "image v2"
    r = env.build(m2, tmp_path / "out3")
    assert statuses(r) == {"a/0": "cached", "a/1": "cached", "a/2": "cached", "b/0": "cached", "b/1": "ran"}
    assert (tmp_path / "out3" / "demo.raw").read_text() == "image v2"

    # change a middle stage of a: a/0 is reused, everything downstream reruns
    m3 = copy.deepcopy(m)
    m3["pipelines"][0]["stages"][1]["options"]["files"]["x"] = "changed"
    r = env.build(m3, tmp_path / "out4")
    assert statuses(r) == {"a/0": "cached", "a/1": "ran", "a/2": "ran", "b/0": "ran", "b/1": "ran"}
    env.assert_store_consistent()


def test_input_content_flows_between_pipelines(env, tmp_path):
    m = base_manifest()
    m["pipelines"][1]["stages"][1] = step({"x": "y"})
    m["artifacts"][0]["path"] = "data"
    env.build(m, tmp_path / "out")
    assert (tmp_path / "out" / "demo.raw").read_text() == "a:.imagebuilder,data,x,y:a0\n"


def test_editing_a_stage_reruns_it(env, tmp_path):
    m = base_manifest()
    env.build(m, tmp_path / "out1")
    exe = env.stages / STEP_TYPE
    exe.write_text(exe.read_text() + "\n# changed\n")
    r = env.build(m, tmp_path / "out2")
    assert set(statuses(r).values()) == {"ran"}


def test_failing_stage_shows_tail_and_leaves_nothing(env, tmp_path):
    m = base_manifest()
    m["pipelines"][1]["stages"][0]["options"]["fail"] = True
    out = tmp_path / "out"
    r = env.run(m, out)
    assert r.returncode == 4, r.stderr
    assert "stage org.imagebuilder.test.step (pipeline 'b', stage 0) failed with exit status 3" in r.stderr
    assert "boom: failing as asked" in r.stderr  # the log tail
    assert "full log:" in r.stderr
    assert r.stdout == ""
    assert no_leftovers(out)
    assert len(env.objects()) == 3  # a's stages are kept for the next try
    assert not list((env.cache / "tmp").iterdir())
    # the log of the failed build is kept
    logs = list((env.cache / "logs").iterdir())
    assert len(logs) == 1 and "boom" in logs[0].read_text()


def test_schema_error_before_anything_runs(env, tmp_path):
    m = base_manifest()
    m["pipelines"][1]["stages"][1]["options"]["bulk"] = -1
    r = env.run(m, tmp_path / "out")
    assert r.returncode == 3
    assert "pipeline 'b', stage 1 (org.imagebuilder.test.step): options/bulk" in r.stderr
    assert env.objects() == []


def test_existing_output_needs_force(env, tmp_path):
    out = tmp_path / "out"
    env.build(base_manifest(), out)
    r = env.run(base_manifest(), out)
    assert r.returncode == 2 and "use --force" in r.stderr
    m = base_manifest()
    m["pipelines"][1]["stages"][1]["options"]["files"]["disk.raw"] = "new"
    env.build(m, out, "--force")
    assert (out / "demo.raw").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_sigkill_of_a_stage_leaves_no_partial_object(env, tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    pidfile = tmp_path / "stage.pid"
    m = base_manifest()
    m["pipelines"][1]["stages"][0]["options"].update(
        {"pidfile": str(pidfile), "hold_while": str(gate), "bulk": 300})
    out = tmp_path / "out"
    proc = env.start(m, out)
    wait_for(pidfile)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert "killed by signal 9" in err
    assert no_leftovers(out)
    env.assert_store_consistent()
    assert len(env.objects()) == 3
    gate.unlink()
    r = env.build(m, out)
    assert statuses(r)["b/0"] == "ran" and statuses(r)["a/2"] == "cached"
    env.assert_store_consistent()


def test_sigkill_of_the_engine_at_any_moment_keeps_the_store_sound(env, tmp_path):
    m = base_manifest()
    for s in m["pipelines"][0]["stages"]:
        s["options"]["bulk"] = 1500  # commits take a moment: kills land mid-copy too
    reference = env.build(m, tmp_path / "ref", "--cache", str(tmp_path / "refcache"))
    for i, delay in enumerate([0.4, 0.8, 1.2, 1.6, 2.0, 2.5]):
        proc = subprocess.Popen(env.argv(m, tmp_path / f"out{i}"), env=env.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        # the engine alone (its stage dies with it: PDEATHSIG) or its whole process group
        (os.kill if i % 2 else os.killpg)(proc.pid, signal.SIGKILL)
        proc.wait()
        env.assert_store_consistent()
    final = env.build(m, tmp_path / "final")
    assert final["artifacts"][0]["sha256"] == reference["artifacts"][0]["sha256"]
    env.assert_store_consistent()
    assert not list((env.cache / "tmp").iterdir())  # the killed builds' workspaces were removed
    assert len(env.objects()) == 5


def test_sigint_stops_the_stage_and_writes_no_output(env, tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    pidfile = tmp_path / "stage.pid"
    m = base_manifest()
    m["pipelines"][0]["stages"][1]["options"].update({"pidfile": str(pidfile), "hold_while": str(gate)})
    out = tmp_path / "out"
    proc = env.start(m, out)
    wait_for(pidfile)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    stage_pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(stage_pid, 0)
    assert no_leftovers(out)
    assert len(env.objects()) == 1
    assert not list((env.cache / "tmp").iterdir())


@pytest.mark.root
@pytest.mark.parametrize("selfkill", [True, False])
def test_mounts_left_by_a_stage_never_lead_to_deleting_host_files(env, tmp_path, selfkill):
    host = tmp_path / "host-dir"
    host.mkdir()
    (host / "precious").write_text("keep me")
    m = base_manifest()
    m["pipelines"][0]["stages"][1]["options"].update({"bind": str(host), "selfkill": selfkill})
    out = tmp_path / "out"
    r = env.run(m, out)
    from imagebuilder.pipeline.store import mounts_under

    try:
        assert (host / "precious").read_text() == "keep me"
        assert mounts_under(env.cache) == []
        if selfkill:
            assert r.returncode == 4 and "killed by signal 9" in r.stderr
            assert no_leftovers(out)
        else:
            assert r.returncode == 0, r.stderr
            assert "left 1 mount(s) behind" in r.stderr
            assert "the stage left mounts behind" in (out / "build.log").read_text()
            summary = json.loads(r.stdout)
            a1 = [s["id"] for s in summary["stages"] if (s["pipeline"], s["index"]) == ("a", 1)][0]
            assert list((env.cache / "objects" / a1 / "tree" / "bound").iterdir()) == []
        assert not list((env.cache / "tmp").iterdir())
    finally:
        for mp in mounts_under(tmp_path):
            subprocess.run(["umount", "-l", mp])


def test_concurrent_builds_share_the_store_safely(env, tmp_path):
    m = base_manifest()
    for s in m["pipelines"][0]["stages"]:
        s["options"]["bulk"] = 500
    procs = [env.start(m, tmp_path / f"out{i}") for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["artifacts"][0]["sha256"] == results[1]["artifacts"][0]["sha256"]
    env.assert_store_consistent()
    assert len(env.objects()) == 5
    warm = env.build(m, tmp_path / "out-warm")
    assert set(statuses(warm).values()) == {"cached"}


def test_checkpoints_limit_what_is_stored(env, tmp_path):
    m = base_manifest()
    r = env.build(m, tmp_path / "out", "--checkpoint", "a")
    assert len(env.objects()) == 1
    a_id = [s["id"] for s in r["stages"] if s["pipeline"] == "a"][-1]
    assert env.objects() == [a_id]
    r2 = env.build(m, tmp_path / "out2", "--checkpoint", "a")
    assert statuses(r2) == {"a/0": "cached", "a/1": "cached", "a/2": "cached", "b/0": "ran", "b/1": "ran"}


# ----------------------------------------------------------------------------- the real pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.slow
def test_real_pipeline_kernel_arg_change_reruns_only_downstream(tmp_path):
    """tiny test OS through the real stages: a kernel argument change reruns deploy, grub, disk."""
    import yaml

    rootfs = tmp_path / "tinyos"
    mk = subprocess.run([sys.executable, str(REPO / "fixtures" / "tinyos" / "mktinyos"), str(rootfs)],
                        capture_output=True, text=True, cwd=REPO)
    if mk.returncode != 0:
        pytest.skip(f"cannot make the tiny OS here: {mk.stderr.strip()[-300:]}")
    d = yaml.safe_load((REPO / "fixtures" / "images" / "tiny.yaml").read_text())
    d["source"]["path"] = str(rootfs)
    d["source"].pop("generator", None)  # made above; the copy's relative generator path would not resolve
    img = tmp_path / "tiny.yaml"
    img.write_text(yaml.safe_dump(d))
    env = dict(os.environ)
    env.pop("IMAGEBUILDER_STAGES_DIR", None)

    def build(definition: Path, out: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(definition), "--cache",
                            str(tmp_path / "cache"), "-o", str(tmp_path / out), "--json"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    cold = build(img, "cold")
    assert set(statuses(cold).values()) == {"ran"}
    meta = json.loads((tmp_path / "cold" / "meta.json").read_text())
    assert len(meta["ostree"]["commit"]) == 64
    assert "ignition.platform.id=metal" in meta["kernel_args"]
    assert meta["partition_table"] and meta["tool_versions"]["ostree"]
    raw = tmp_path / "cold" / meta["artifacts"][0]["name"]
    assert raw.stat().st_size == meta["artifacts"][0]["size"]

    d["kernel_args"] = [*(d.get("kernel_args") or []), "imagebuilder.test=1"]
    img2 = tmp_path / "tiny2.yaml"
    img2.write_text(yaml.safe_dump(d))
    warm = build(img2, "warm")
    ran = {s["type"] for s in warm["stages"] if s["status"] == "ran"}
    assert ran == {"org.imagebuilder.ostree.deploy", "org.imagebuilder.grub.config",
                   "org.imagebuilder.disk.image"}
    meta2 = json.loads((tmp_path / "warm" / "meta.json").read_text())
    assert "imagebuilder.test=1" in meta2["kernel_args"]
    assert meta2["ostree"]["commit"] == meta["ostree"]["commit"]
    assert meta2["artifacts"][0]["sha256"] != meta["artifacts"][0]["sha256"]


def test_checkpoint_globs(env, tmp_path):
    m = base_manifest()
    r = env.build(m, tmp_path / "out", "--checkpoint", "*", "--checkpoint", "org.imagebuilder.test.*")
    assert len(env.objects()) == 5  # the stage-type glob matches every stage
    m["pipelines"][1]["stages"][1]["options"]["files"]["disk.raw"] = "v2"
    r = env.build(m, tmp_path / "out2", "--checkpoint", "[ab]")
    assert statuses(r)["b/0"] == "cached" and statuses(r)["b/1"] == "ran"
    assert len(env.objects()) == 6  # only b's last stage was added


def test_inputs_of_a_cached_pipeline_are_not_rebuilt(env, tmp_path):
    """Only b's result is kept: a rebuild takes b from the store and does not run a at all."""
    m = base_manifest()
    env.build(m, tmp_path / "out", "--checkpoint", "b")
    r = env.build(m, tmp_path / "out2", "--checkpoint", "b")
    assert set(statuses(r)) == {"b/0", "b/1"}
    assert set(statuses(r).values()) == {"cached"}
