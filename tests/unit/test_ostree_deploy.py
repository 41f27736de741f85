"""ostree.deploy with the real ostree: sysroot split into boot/ and root/, BLS, kargs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from ostree_trees import KVER, make_rootfs

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ostree.commit import CommitOptions, commit_tree
from imagebuilder.ostree.deploy import DeployOptions, assemble_kargs, deploy
from imagebuilder.ostree.prepare import PrepareOptions, prepare_tree

pytestmark = pytest.mark.root  # ostree admin deploy sets ownership and chattr +i

REF = "testos/x86_64/base"


@pytest.fixture(scope="module")
def repo_tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("deploy")
    tree = make_rootfs(base / "rootfs")
    prepare_tree(tree, PrepareOptions(initramfs="prebuilt"))
    out = base / "commit"
    out.mkdir()
    info = commit_tree(tree, out / "repo", CommitOptions(ref=REF, version="7"), 1700000000)
    (out / ".imagebuilder").mkdir()
    (out / ".imagebuilder/ostree.json").write_text(json.dumps(info.to_record()))
    return out


def _deploy(repo_tree: Path, dest: Path, **kw) -> tuple:
    dest.mkdir()
    opts = DeployOptions(osname="testos", **kw)
    return deploy(repo_tree, dest, opts), dest


def test_sysroot_layout_and_bls(repo_tree: Path, tmp_path: Path) -> None:
    info, sysroot = _deploy(repo_tree, tmp_path / "s", kernel_args=("quiet",))
    commit = json.loads((repo_tree / ".imagebuilder/ostree.json").read_text())["commit"]
    assert info.commit == commit and info.ref == REF  # ref taken from the commit record
    boot, root = sysroot / "boot", sysroot / "root"
    assert (sysroot / "efi").is_dir() and list((sysroot / "efi").iterdir()) == []
    assert list((root / "boot").iterdir()) == []  # mount point of the boot partition
    deployment = root / f"ostree/deploy/testos/deploy/{commit}.0"
    assert (deployment / "etc/os-release").read_text().startswith("NAME=\"Test OS\"")
    assert (deployment / "etc/machine-id").read_text() == "uninitialized\n"
    assert (root / "ostree/deploy/testos/var").is_dir()
    assert os.readlink(boot / "loader") in ("loader.0", "loader.1")
    [entry] = info.entries
    assert entry.linux.startswith("/ostree/testos-") and entry.linux.endswith(f"/vmlinuz-{KVER}")
    assert entry.initrd[0].endswith(f"/initramfs-{KVER}.img")
    assert (boot / entry.linux.lstrip("/")).read_bytes().startswith(b"MZ fake kernel")
    assert entry.kargs[:3] == ["root=LABEL=root", "rw", "quiet"]
    assert "$ignition_firstboot" in entry.kargs
    assert entry.ostree_target and entry.ostree_target.startswith("/ostree/boot.1/testos/")
    assert (root / entry.ostree_target.lstrip("/")).is_symlink()
    assert "Test OS 1" in entry.title and "7" in entry.title
    config = (root / "ostree/repo/config").read_text()
    assert "bootloader=none" in config
    rec = info.to_record()
    assert rec["deployment"] == f"ostree/deploy/testos/deploy/{commit}.0"
    assert rec["bls"][0]["linux"] == entry.linux


def test_deployment_not_immutable(repo_tree: Path, tmp_path: Path) -> None:
    info, sysroot = _deploy(repo_tree, tmp_path / "s")
    attrs = subprocess.run(["lsattr", "-d", sysroot / "root" / info.deployment],
                           capture_output=True, text=True, check=True).stdout.split()[0]
    assert "i" not in attrs  # the engine must be able to copy and delete the tree


def test_deploy_is_deterministic(repo_tree: Path, tmp_path: Path) -> None:
    a, sa = _deploy(repo_tree, tmp_path / "a")
    b, sb = _deploy(repo_tree, tmp_path / "b")
    assert a.to_record() == b.to_record()

    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".lock" not in p.name)
    assert listing(sa) == listing(sb)


def test_kargs_assembly() -> None:
    assert assemble_kargs(DeployOptions(osname="x")) == [
        "root=LABEL=root", "rw", "console=tty0", "console=ttyS0,115200n8", "$ignition_firstboot"]
    # the engine passes the full list: nothing is added but $ignition_firstboot
    full = ("root=UUID=1234", "rw", "console=ttyS0,115200n8", "imagebuilder.selftest=1")
    assert assemble_kargs(DeployOptions(osname="x", kernel_args=full)) == [*full, "$ignition_firstboot"]
    assert assemble_kargs(DeployOptions(osname="x", kernel_args=("ro",), ignition_firstboot=False,
                                        console=())) == ["root=LABEL=root", "ro"]
    with pytest.raises(InvalidConfigError, match="whitespace"):
        assemble_kargs(DeployOptions(osname="x", kernel_args=("a b",)))


def test_deploy_needs_a_repo(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    with pytest.raises(InvalidConfigError, match="no OSTree repository"):
        deploy(tmp_path / "in", tmp_path / "out", DeployOptions(osname="x"))


def test_deploy_refuses_non_empty_sysroot(repo_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "s/root").mkdir(parents=True)
    (tmp_path / "s/root/junk").write_text("x")
    with pytest.raises(InvalidConfigError, match="not empty"):
        deploy(repo_tree, tmp_path / "s", DeployOptions(osname="testos"))
