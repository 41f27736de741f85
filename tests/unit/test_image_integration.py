"""The Ignition OS integration: files installed into a root tree, config checks for
Debian's Ignition 2.14, embedding, and the real kargs helper script run on the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import integration as ig
from imagebuilder.run import data_path

HELPER = data_path("ignition-integration", "dracut", ig.DRACUT_MODULE, "ignition-kargs-helper")
CSUM = "cd" * 32
OSTREE_ARG = f"ostree=/ostree/boot.1/debian/{CSUM}/0"
LINUX = f"/ostree/debian-{CSUM}/vmlinuz-6.1.0-1-amd64"


def fake_rootfs(tmp: Path, *, ssh: bool = True, selinux: str | None = None) -> Path:
    t = tmp / "tree"
    for d in ("usr/bin", "usr/lib/systemd/system", "etc", "var"):
        (t / d).mkdir(parents=True, exist_ok=True)
    (t / "usr/bin/dracut").write_text("#!/bin/sh\n")
    mod = t / "usr/lib/dracut/modules.d/30ignition"
    mod.mkdir(parents=True)
    (mod / "module-setup.sh").write_text("install() { :; }\n")
    for u in ig.IGNITION_UNITS_WITH_EMERGENCY:
        (mod / u).write_text("[Unit]\nOnFailure=emergency.target\n")
    if ssh:
        (t / "etc/ssh").mkdir()
        (t / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    if selinux is not None:
        (t / "etc/selinux").mkdir()
        (t / "etc/selinux/config").write_text(selinux)
    return t


def test_install_integration(tmp_path):
    t = fake_rootfs(tmp_path)
    res = ig.install_integration(t)
    mod = t / f"usr/lib/dracut/modules.d/{ig.DRACUT_MODULE}"
    for name in ("module-setup.sh", "ignition-kargs-helper", "imagebuilder-ignition-var",
                 "imagebuilder-ignition-setup-user", "setfiles-noop"):
        assert os.access(mod / name, os.X_OK), name
    assert not os.access(mod / "imagebuilder-ignition-mount-var.service", os.X_OK)
    conf = (t / "etc/dracut.conf.d/35-imagebuilder-ignition.conf").read_text()
    assert 'add_dracutmodules+=" ignition imagebuilder-ignition "' in conf
    link = t / "usr/lib/systemd/system/multi-user.target.wants" / ig.FIRSTBOOT_UNIT
    assert os.readlink(link) == f"../{ig.FIRSTBOOT_UNIT}"
    unit = (t / "usr/lib/systemd/system" / ig.FIRSTBOOT_UNIT).read_text()
    assert "ConditionKernelCommandLine=ignition.firstboot" in unit and "/boot/ignition/config.ign" in unit
    assert "authorized_keys.d/*" in (t / "etc/ssh/sshd_config.d/40-imagebuilder-authorized-keys-d.conf").read_text()
    assert "SELINUX=disabled" in (t / "etc/selinux/config").read_text()
    assert (t / "etc/machine-id").read_text() == "uninitialized\n"
    assert res.notes == [] and "/etc/machine-id" in res.installed
    assert res.to_record()["files_digest"] == ig.files_digest()


def test_every_integration_file_says_why_it_exists():
    root = data_path("ignition-integration")
    for p in sorted(root.rglob("*")):
        if p.is_file():
            assert "imagebuilder" in p.read_text()[:600], p


def test_existing_selinux_config_and_no_ssh(tmp_path):
    t = fake_rootfs(tmp_path, ssh=False, selinux="SELINUX=enforcing\nSELINUXTYPE=default\n")
    res = ig.install_integration(t)
    assert (t / "etc/selinux/config").read_text().startswith("SELINUX=enforcing")
    assert "/etc/selinux/config" in res.kept
    assert any("no OpenSSH" in n for n in res.notes)
    assert not (t / "etc/ssh").exists()


def test_tree_without_ignition_or_prepared(tmp_path):
    t = fake_rootfs(tmp_path)
    shutil.rmtree(t / "usr/lib/dracut/modules.d/30ignition")
    with pytest.raises(InvalidConfigError, match="Ignition is not installed") as e:
        ig.install_integration(t)
    assert "source.packages" in (e.value.hint or "")
    t2 = fake_rootfs(tmp_path / "b")
    os.rename(t2 / "etc", t2 / "usr/etc")
    with pytest.raises(InvalidConfigError, match="already prepared"):
        ig.install_integration(t2)


def test_check_config_versions(tmp_path):
    ok = json.dumps({"ignition": {"version": "3.3.0"}}).encode()
    assert ig.check_config(ok).version == "3.3.0"
    # 3.4.0 using nothing new: embedded as 3.3.0 (Debian's Ignition cannot parse 3.4.0)
    c = ig.check_config(json.dumps({"ignition": {"version": "3.4.0"},
                                    "storage": {"files": [{"path": "/etc/x"}]}}).encode())
    assert c.downgraded_from == "3.4.0" and c.version == "3.3.0"
    assert json.loads(c.data)["ignition"]["version"] == "3.3.0"
    with pytest.raises(InvalidConfigError, match="does not support.*discard"):
        ig.check_config(json.dumps({"ignition": {"version": "3.4.0"},
                                    "storage": {"luks": [{"name": "x", "device": "/dev/vda",
                                                          "discard": True}]}}).encode())
    with pytest.raises(InvalidConfigError, match="storage.files"):
        ig.check_config(json.dumps({"ignition": {"version": "3.3.0"},
                                    "storage": {"files": [{"path": "x"}]}}).encode())


@pytest.mark.skipif(shutil.which("ignition-validate") is None, reason="needs ignition-validate")
def test_check_config_runs_ignition_validate(monkeypatch):
    calls = []
    import imagebuilder.ignition.integration as mod

    real = mod.run

    def spy(argv, **kw):
        calls.append(argv[0])
        return real(argv, **kw)

    monkeypatch.setattr(mod, "run", spy)
    ig.check_config(json.dumps({"ignition": {"version": "3.3.0"}}).encode())
    assert calls == ["ignition-validate"]


def test_embed_config(tmp_path):
    p = ig.embed_config(tmp_path, b'{"ignition":{"version":"3.3.0"}}')
    assert p == tmp_path / "ignition/config.ign"
    assert p.stat().st_mode & 0o777 == 0o600 and p.parent.stat().st_mode & 0o777 == 0o700


def test_manifest_embeds_and_validates(tmp_path):
    from imagebuilder.pipeline.definition import parse_definition
    from imagebuilder.pipeline.manifest import from_definition, resolve
    from imagebuilder.pipeline.stages import StageIndex

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "src").mkdir()
    (tmp_path / "c.ign").write_bytes((repo / "fixtures/ignition/firstboot-demo.ign").read_bytes())
    data = {"name": "t", "source": {"type": "directory", "path": "src"},
            "ostree": {"osname": "debian", "ref": "debian/x86_64/t"},
            "ignition": {"config": "c.ign", "platform": "metal"}}
    index = StageIndex(repo / "osbuild-stages")
    m = from_definition(parse_definition(data, tmp_path), index)
    resolve(m, index)  # options validate against the real schemas
    tree = [s.type for s in m.pipeline("tree").stages]
    assert tree[1] == "org.imagebuilder.ignition.integration"
    sysroot = m.pipeline("sysroot").stages
    assert [s.type for s in sysroot] == ["org.imagebuilder.ostree.deploy", "org.imagebuilder.ignition.embed",
                                         "org.imagebuilder.grub.config"]
    assert json.loads(sysroot[1].options["config"]) == json.loads((tmp_path / "c.ign").read_text())
    assert "ignition.platform.id=metal" in sysroot[0].options["kernel_args"]
    (tmp_path / "c.ign").write_text('{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "x"}]}}')
    with pytest.raises(InvalidConfigError, match="storage.files"):
        from_definition(parse_definition(data, tmp_path), index)


# --------------------------------------------------------------------------- kargs helper


def _helper_env(tmp: Path, options: str, cmdline: str | None = None) -> tuple[dict, Path]:
    boot = tmp / "boot"
    ent = boot / "loader.1/entries"
    ent.mkdir(parents=True)
    (boot / "loader").symlink_to("loader.1")
    (ent / "ostree-1-debian.conf").write_text(
        f"title Debian (ostree:0)\nversion 1\noptions {options}\nlinux {LINUX}\ninitrd /x.img\n")
    (ent / "ostree-2-debian.conf").write_text(
        "title other\nversion 2\noptions root=x ostree=/ostree/boot.1/debian/other/0\nlinux /other\n")
    (boot / "grub").mkdir()
    (boot / "grub/grub.cfg").write_text(
        f"# Generated by imagebuilder\nmenuentry 'a' {{\n  insmod gzio\n  linux {LINUX} {options}\n"
        "  initrd /x.img\n}\nmenuentry 'b' {\n  linux /other root=x\n}\n")
    cl = tmp / "cmdline"
    cl.write_text(cmdline if cmdline is not None else f"BOOT_IMAGE={LINUX} {options.replace('$ignition_firstboot', 'ignition.firstboot')}\n")
    run = tmp / "run"
    run.mkdir()
    env = {**os.environ, "IMAGEBUILDER_KARGS_CMDLINE": str(cl), "IMAGEBUILDER_KARGS_BOOT_DIR": str(boot),
           "IMAGEBUILDER_KARGS_RUN_DIR": str(run)}
    return env, boot


def initramfs_commands() -> list[str]:
    """The programs module-setup.sh puts into the initramfs (inst_multiple lines)."""
    text = (HELPER.parent / "module-setup.sh").read_text().replace("\\\n", " ")
    cmds: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["inst_multiple"]:
            cmds += [w for w in words[1:] if not w.startswith("-")]
    return cmds


def initramfs_path(tmp: Path) -> str:
    """A PATH with only what the initramfs has: so a helper using e.g. head(1) fails here too."""
    d = tmp / "initramfs-bin"
    d.mkdir()
    for c in initramfs_commands():
        real = shutil.which(c) or shutil.which(c, path="/usr/sbin:/sbin")
        if real:
            (d / c).symlink_to(real)
    return str(d)


def _run_helper(env: dict, *args: str) -> subprocess.CompletedProcess:
    tmp = Path(env["IMAGEBUILDER_KARGS_RUN_DIR"]).parent
    env = {**env, "PATH": initramfs_path(tmp) if not (tmp / "initramfs-bin").exists()
           else str(tmp / "initramfs-bin")}
    return subprocess.run([shutil.which("bash"), str(HELPER), *args], env=env,
                          capture_output=True, text=True)


def test_kargs_helper_edits_entry_and_grub_once(tmp_path):
    opts = f"root=LABEL=root rw old=1 $ignition_firstboot {OSTREE_ARG} old=1"
    env, boot = _helper_env(tmp_path, opts)
    p = _run_helper(env, "--should-exist", "new=1", "--should-exist", "rw",
                    "--should-not-exist", "old=1")
    assert p.returncode == 0, p.stderr
    want = f"root=LABEL=root rw $ignition_firstboot {OSTREE_ARG} new=1"
    entry = (boot / "loader.1/entries/ostree-1-debian.conf").read_text()
    assert f"options {want}\n" in entry and f"linux {LINUX}\n" in entry
    assert "ostree=/ostree/boot.1/debian/other/0" in (boot / "loader.1/entries/ostree-2-debian.conf").read_text()
    cfg = (boot / "grub/grub.cfg").read_text()
    assert f"  linux {LINUX} {want}\n" in cfg and "  linux /other root=x\n" in cfg
    assert (tmp_path / "run/imagebuilder-kargs-reboot").exists()
    # second run (the boot after the reboot): nothing to do, no reboot requested
    (tmp_path / "run/imagebuilder-kargs-reboot").unlink()
    p = _run_helper(env, "--should-exist", "new=1", "--should-not-exist", "old=1")
    assert p.returncode == 0 and "already as requested" in p.stdout
    assert not (tmp_path / "run/imagebuilder-kargs-reboot").exists()
    assert not list(boot.rglob("*.tmp"))


def test_initramfs_commands_listed():
    assert {"sed", "mount", "umount", "sync", "seq", "systemd-tmpfiles"} <= set(initramfs_commands())


def test_kargs_helper_no_matching_entry(tmp_path):
    env, _ = _helper_env(tmp_path, f"root=x {OSTREE_ARG}", cmdline="root=x ostree=/ostree/boot.0/nope/1/0\n")
    p = _run_helper(env, "--should-exist", "a=1")
    assert p.returncode == 1 and "no BLS entry" in p.stderr
