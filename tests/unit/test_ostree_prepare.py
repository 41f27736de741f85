"""ostree.prepare on small synthetic root filesystems (no dracut: prebuilt initramfs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ostree_trees import KVER, make_rootfs

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ostree.prepare import (
    PrepareOptions,
    find_kernel,
    parse_os_release,
    prepare_tree,
    read_os_release,
    resolve_in_tree,
)

PREBUILT = PrepareOptions(initramfs="prebuilt")


def test_layout_after_prepare(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    res = prepare_tree(tree, PREBUILT)
    assert res.kernel_version == KVER and res.initramfs == "prebuilt" and res.os_id == "testos"
    mods = tree / "usr/lib/modules" / KVER
    assert (mods / "vmlinuz").read_bytes().startswith(b"MZ fake kernel")
    assert (mods / "initramfs.img").read_bytes().startswith(b"070701")
    assert list((tree / "boot").iterdir()) == []  # /boot is only a mount point now
    assert not (tree / "vmlinuz").is_symlink() and not (tree / "initrd.img").is_symlink()
    assert not (tree / "etc").exists() and (tree / "usr/etc/hostname").read_text() == "test\n"
    assert (tree / "usr/etc/machine-id").read_text() == "uninitialized\n"
    assert "LABEL=boot /boot" in (tree / "usr/etc/fstab").read_text()
    links = {n: os.readlink(tree / n) for n in ("home", "root", "opt", "srv", "mnt", "media", "ostree")}
    assert links == {"home": "var/home", "root": "var/roothome", "opt": "var/opt", "srv": "var/srv",
                     "mnt": "var/mnt", "media": "run/media", "ostree": "sysroot/ostree"}
    assert os.readlink(tree / "usr/local") == "../var/usrlocal"
    assert (tree / "sysroot").is_dir()
    for d in ("dev", "run", "tmp", "var", "proc", "sys"):
        assert list((tree / d).iterdir()) == [], d
    assert stat.S_IMODE((tree / "tmp").stat().st_mode) == 0o1777


def test_var_becomes_tmpfiles(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    res = prepare_tree(tree, PREBUILT)
    lines = (tree / "usr/lib/tmpfiles.d/imagebuilder-var.conf").read_text().splitlines()
    entries = {ln.split()[1]: ln.split() for ln in lines if not ln.startswith("#")}
    assert entries["/var/tmp"][:3] == ["d", "/var/tmp", "1777"]
    assert entries["/var/spool/cron"][2] == "0730"
    assert entries["/var/roothome"][2] == "0700"  # from /root
    assert entries["/var/usrlocal/bin"][0] == "d"  # from /usr/local
    assert entries["/var/run"] == ["L", "/var/run", "-", "-", "-", "-", "/run"]
    # the dpkg database survives, read-only in /usr, linked from /var
    assert entries["/var/lib/dpkg"][-1] == "/usr/lib/sysimage/dpkg"
    assert (tree / "usr/lib/sysimage/dpkg/status").read_text().startswith("Package: base-files")
    # other files are dropped (and counted): apt history, root's .bashrc, /usr/local/bin/tool
    assert "/var/log/apt/history.log" in res.dropped_var_files
    assert "/var/roothome/.bashrc" in res.dropped_var_files
    assert "/var/usrlocal/bin/tool" in res.dropped_var_files
    paths = [ln.split()[1] for ln in lines if not ln.startswith("#")]
    assert paths == sorted(paths)  # deterministic order


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        tree = make_rootfs(tmp_path / name)
        prepare_tree(tree, PREBUILT)
        outs.append(sorted((str(p.relative_to(tree)), p.is_symlink() and os.readlink(p),
                            p.is_file() and not p.is_symlink() and p.read_bytes())
                           for p in tree.rglob("*")))
    assert outs[0] == outs[1]


def test_device_nodes_removed(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    res = prepare_tree(tree, PREBUILT)
    assert res.removed_dev_entries == 2  # the node (or fifo) and dev/pts


def test_kernel_already_in_usr_lib_modules_with_auto_initramfs(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t", kernel_in_boot=False)
    res = prepare_tree(tree, PrepareOptions())  # auto: keeps the tree's initramfs.img
    assert res.initramfs == "prebuilt"
    assert (tree / "usr/lib/modules" / KVER / "initramfs.img").is_file()


def test_dracut_requested_but_missing(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t", prebuilt_initramfs=False)
    with pytest.raises(InvalidConfigError, match="dracut is not installed"):
        prepare_tree(tree, PrepareOptions())


def test_prebuilt_initramfs_missing(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t", prebuilt_initramfs=False)
    with pytest.raises(InvalidConfigError, match="no initramfs"):
        prepare_tree(tree, PREBUILT)


def test_missing_os_release_is_an_error(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t", os_release=None)
    with pytest.raises(InvalidConfigError, match="no os-release"):
        prepare_tree(tree, PREBUILT)
    assert (tree / "etc").is_dir()  # checked before anything changed


def test_os_release_without_id(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t", os_release="NAME=x\n")
    with pytest.raises(InvalidConfigError, match="neither ID nor PRETTY_NAME"):
        read_os_release(tree)


def test_prepare_twice_is_refused(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    prepare_tree(tree, PREBUILT)
    with pytest.raises(InvalidConfigError, match="already prepared"):
        prepare_tree(tree, PREBUILT)


def test_several_kernels_need_kernel_version(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    (tree / "usr/lib/modules/5.10.0-old").mkdir()
    (tree / "boot/vmlinuz-5.10.0-old").write_bytes(b"old")
    with pytest.raises(InvalidConfigError, match="several kernels"):
        find_kernel(tree)
    assert find_kernel(tree, KVER)[0] == KVER


def test_no_kernel(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    (tree / f"boot/vmlinuz-{KVER}").unlink()
    with pytest.raises(InvalidConfigError, match="no kernel found"):
        find_kernel(tree)


def test_resolve_in_tree_keeps_absolute_links_inside(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    (tree / "etc/evil").symlink_to("/../../../etc/passwd")
    assert resolve_in_tree(tree, "etc/evil") == tree / "etc/passwd"
    assert resolve_in_tree(tree, "etc/os-release") == tree / "usr/lib/os-release"


def test_parse_os_release_quotes() -> None:
    assert parse_os_release('ID="debian"\nPRETTY_NAME=\'Debian 12\'\n# c\nBAD\n') == \
        {"ID": "debian", "PRETTY_NAME": "Debian 12"}


def test_selfcheck_installed_in_systemd_trees(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    (tree / "usr/lib/systemd").mkdir(parents=True)
    (tree / "usr/lib/systemd/systemd").write_bytes(b"\x7fELF")
    prepare_tree(tree, PREBUILT)
    unit = tree / "usr/lib/systemd/system/imagebuilder-selfcheck.service"
    assert "ConditionKernelCommandLine=imagebuilder.selftest=1" in unit.read_text()
    wants = tree / "usr/lib/systemd/system/multi-user.target.wants/imagebuilder-selfcheck.service"
    assert os.readlink(wants) == "../imagebuilder-selfcheck.service"
    script = tree / "usr/libexec/imagebuilder-selfcheck"
    assert script.stat().st_mode & 0o111


def test_selfcheck_not_installed_without_systemd(tmp_path: Path) -> None:
    tree = make_rootfs(tmp_path / "t")
    prepare_tree(tree, PREBUILT)
    assert not (tree / "usr/lib/systemd/system/imagebuilder-selfcheck.service").exists()


def test_build_host_copies_are_dropped(tmp_path: Path) -> None:
    from imagebuilder.ostree.prepare import drop_host_copies

    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/hostname").write_text("buildbox\n")
    (host / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
    tree = make_rootfs(tmp_path / "t")
    (tree / "etc/hostname").write_text("buildbox\n")  # copied from the host
    (tree / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")  # the image's own
    assert drop_host_copies(tree, host) == ["/etc/hostname"]
    assert not (tree / "etc/hostname").exists() and (tree / "etc/resolv.conf").exists()
