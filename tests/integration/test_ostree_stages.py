"""The three OSTree stage executables, run the way the engine runs them (ARGS.json).

Input: the tiny OS root filesystem (fixtures/tinyos/mktinyos). The chain
prepare -> commit -> deploy must produce the records the engine collects and a
sysroot whose BLS entry points at files on the boot partition.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / "osbuild-stages"
EPOCH = 1700000000

pytestmark = pytest.mark.root


def run_stage(name: str, tree: Path, options: dict, inputs: dict | None = None,
              workdir: Path | None = None) -> subprocess.CompletedProcess:
    tree.mkdir(parents=True, exist_ok=True)
    work = workdir or tree.parent / f"{tree.name}.work"
    work.mkdir(exist_ok=True)
    args = {"tree": str(tree), "options": options,
            "inputs": {k: str(v) for k, v in (inputs or {}).items()},
            "workdir": str(work), "meta": {"id": "test", "source_epoch": EPOCH}}
    args_file = tree.parent / f"{tree.name}.{name}.args.json"
    args_file.write_text(json.dumps(args))
    return subprocess.run([sys.executable, str(STAGES / f"org.imagebuilder.ostree.{name}"),
                           str(args_file)], capture_output=True, text=True)


def schema(name: str) -> dict:
    return json.loads((STAGES / f"org.imagebuilder.ostree.{name}.meta.json").read_text())["schema"]


@pytest.fixture(scope="module")
def tiny_rootfs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tinyos") / "rootfs"
    subprocess.run([sys.executable, str(REPO / "fixtures/tinyos/mktinyos"), str(out)],
                   check=True, capture_output=True)
    return out


def test_schemas_are_strict_and_accept_engine_options() -> None:
    for name in ("prepare", "commit", "deploy"):
        s = schema(name)
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["additionalProperties"] is False
    v = jsonschema.Draft202012Validator
    assert not list(v(schema("prepare")).iter_errors({}))
    assert not list(v(schema("commit")).iter_errors({"ref": "debian/x86_64/base", "version": "1"}))
    engine_deploy = {"osname": "debian", "ref": "debian/x86_64/base",
                     "kernel_args": ["root=UUID=0b4e4f1a-1c4b-4c1e-9b1a-2f1e1d1c1b1a", "rw",
                                     "console=ttyS0,115200n8", "$ignition_firstboot"]}
    assert not list(v(schema("deploy")).iter_errors(engine_deploy))
    assert list(v(schema("deploy")).iter_errors({"osname": "x", "bogus": 1}))
    assert list(v(schema("deploy")).iter_errors({"osname": "x", "kernel_args": ["a b"]}))
    assert list(v(schema("commit")).iter_errors({}))  # ref is required


def test_prepare_commit_deploy_chain(tiny_rootfs: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(tiny_rootfs, tree, symlinks=True)
    p = run_stage("prepare", tree, {})
    assert p.returncode == 0, p.stderr
    rec = json.loads((tree / ".imagebuilder/prepare.json").read_text())
    assert rec["os_id"] == "tinyos" and rec["initramfs"] == "prebuilt"

    commit_tree = tmp_path / "commit"
    p = run_stage("commit", commit_tree, {"ref": "tinyos/x86_64/base", "version": "1"}, {"tree": tree})
    assert p.returncode == 0, p.stderr
    ostree_rec = json.loads((commit_tree / ".imagebuilder/ostree.json").read_text())
    assert ostree_rec["ref"] == "tinyos/x86_64/base" and ostree_rec["version"] == "1"

    sysroot = tmp_path / "sysroot"
    p = run_stage("deploy", sysroot, {"osname": "tinyos", "kernel_args": ["quiet"]},
                  {"repo": commit_tree})
    assert p.returncode == 0, p.stderr
    dep = json.loads((sysroot / ".imagebuilder/deploy.json").read_text())
    assert dep["commit"] == ostree_rec["commit"] and dep["osname"] == "tinyos"
    assert dep["kargs"] == ["root=LABEL=root", "rw", "quiet", "console=tty0",
                            "console=ttyS0,115200n8", "$ignition_firstboot"]
    [entry] = dep["bls"]
    assert (sysroot / "boot" / entry["linux"].lstrip("/")).is_file()
    assert (sysroot / "boot" / entry["initrd"][0].lstrip("/")).is_file()
    deployment = sysroot / "root" / dep["deployment"]
    assert (deployment / "usr/sbin/init").is_file()
    assert (deployment / "etc/machine-id").read_text() == "uninitialized\n"
    assert not (deployment / ".imagebuilder").exists()
    assert not any((sysroot / "root/boot").iterdir())
    assert not (sysroot / "root/boot").is_mount()  # the scratch tmpfs is gone


def test_prepare_stage_fails_cleanly_without_os_release(tiny_rootfs: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(tiny_rootfs, tree, symlinks=True)
    (tree / "etc/os-release").unlink()
    (tree / "usr/lib/os-release").unlink()
    p = run_stage("prepare", tree, {})
    assert p.returncode == 1
    assert "stage failed:" in p.stderr and "no os-release" in p.stderr
    assert "Traceback" not in p.stderr  # a user-facing error, not a crash


def test_commit_stage_is_deterministic(tiny_rootfs: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(tiny_rootfs, tree, symlinks=True)
    assert run_stage("prepare", tree, {}).returncode == 0
    commits = []
    for n in ("a", "b"):
        out = tmp_path / n
        assert run_stage("commit", out, {"ref": "tinyos/x86_64/base"}, {"tree": tree}).returncode == 0
        commits.append(json.loads((out / ".imagebuilder/ostree.json").read_text())["commit"])
    assert commits[0] == commits[1]
