"""Small root filesystems for the OSTree unit tests (imported by tests/unit/test_ostree_*.py)."""

from __future__ import annotations

import os
from pathlib import Path

KVER = "6.1.0-test-amd64"
OS_RELEASE = 'NAME="Test OS"\nID=testos\nPRETTY_NAME="Test OS 1"\n'


def make_rootfs(root: Path, *, kernel_in_boot: bool = True, prebuilt_initramfs: bool = True,
                os_release: str | None = OS_RELEASE, device_node: bool = True) -> Path:
    """A Debian-shaped rootfs: kernel in /boot, initrd, /var content, /dev nodes, /root files."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/modules/" + KVER + "/kernel", "usr/local/bin",
              "usr/local/share", "etc/dracut.conf.d", "boot", "dev", "proc", "sys", "run/lock", "tmp",
              "var/lib/dpkg/info", "var/lib/apt/lists", "var/log/apt", "var/cache/apt", "var/tmp",
              "var/spool/cron", "home", "root", "opt", "srv", "mnt", "media"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        (root / link).symlink_to(target)
    (root / "usr/bin/true").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "usr/bin/true", 0o755)
    if os_release is not None:
        (root / "usr/lib/os-release").write_text(os_release)
        (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/hostname").write_text("test\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/fstab").write_text("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n")
    kernel = b"MZ fake kernel image " + KVER.encode()
    initrd = b"070701 fake initramfs " + KVER.encode()
    if kernel_in_boot:
        (root / f"boot/vmlinuz-{KVER}").write_bytes(kernel)
        (root / f"boot/config-{KVER}").write_text("CONFIG_X=y\n")
        (root / f"boot/System.map-{KVER}").write_text("0 T x\n")
        (root / "vmlinuz").symlink_to(f"boot/vmlinuz-{KVER}")
        (root / "initrd.img").symlink_to(f"boot/initrd.img-{KVER}")
        if prebuilt_initramfs:
            (root / f"boot/initrd.img-{KVER}").write_bytes(initrd)
    else:
        (root / f"usr/lib/modules/{KVER}/vmlinuz").write_bytes(kernel)
        if prebuilt_initramfs:
            (root / f"usr/lib/modules/{KVER}/initramfs.img").write_bytes(initrd)
    (root / "var/lib/dpkg/status").write_text("Package: base-files\nStatus: install ok installed\n")
    (root / "var/lib/dpkg/info/base-files.list").write_text("/etc/os-release\n")
    (root / "var/log/apt/history.log").write_text("Start-Date: x\n")
    (root / "var/run").symlink_to("/run")
    (root / "var/lock").symlink_to("/run/lock")
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "var/spool/cron", 0o730)
    (root / "root/.bashrc").write_text("# root bashrc\n")
    os.chmod(root / "root", 0o700)
    (root / "usr/local/bin/tool").write_text("#!/bin/sh\n")
    (root / "run/lock/x").write_text("")
    (root / "tmp/junk").write_text("junk")
    if device_node:
        if os.geteuid() == 0:
            os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
        else:
            os.mkfifo(root / "dev/fifo")
    (root / "dev/pts").mkdir()
    return root
