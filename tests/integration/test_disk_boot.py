"""Boot disks built by disk.image under QEMU TCG: SeaBIOS (BIOS GRUB in MBR + BIOS-BOOT),
OVMF (EFI/BOOT/BOOTX64.EFI), and OVMF on a 4096-byte-sector disk.

The sysroot is synthetic: the host's kernel plus a tiny busybox initramfs whose /init
prints /proc/cmdline and a marker, then powers off. That exercises the real chain
firmware -> GRUB (core image, early config, grub.cfg from BLS, ignition.firstboot logic)
-> kernel + initramfs -> kernel arguments, without needing an OSTree build.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from imagebuilder.boot.grub import write_grub_config
from imagebuilder.disk.assemble import DiskOptions, build_disk

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

MARKER = "IMAGEBUILDER-DISK-BOOT-OK"
INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
echo {MARKER}
/bin/busybox poweroff -f
"""
KARGS = "console=ttyS0,115200n8 root=LABEL=root rw imagebuilder.test=disk-boot"
BLS = f"""title Synthetic OS 1 (ostree:0)
version 1
options {KARGS} $ignition_firstboot ostree=/ostree/boot.1/syn/abc/0
linux /ostree/syn-abc/vmlinuz
initrd /ostree/syn-abc/initramfs.img
"""
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BOOT_TIMEOUT = 300


def host_kernel() -> Path | None:
    ks = sorted(Path("/boot").glob("vmlinuz-*"))
    return ks[-1] if ks else None


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (uid 0, mtime 0); /dev/console comes from the kernel's own."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.write(b"070701" + b"".join(b"%08x" % v for v in fields) + nb)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def busybox_initramfs() -> bytes:
    bb = shutil.which("busybox")
    assert bb, "busybox-static is needed"
    return gzip.compress(newc([
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, Path(bb).read_bytes()),
        ("init", stat.S_IFREG | 0o755, INIT.encode()),
        ("proc", stat.S_IFDIR | 0o755, b""),
    ]), mtime=0)


def make_boot_sysroot(base: Path, *, firstboot: bool) -> Path:
    kernel = host_kernel()
    if kernel is None:
        pytest.skip("no host kernel in /boot (apt-get install linux-image-amd64)")
    if shutil.which("busybox") is None:
        pytest.skip("needs busybox-static")
    sr = base / "sysroot"
    ent = sr / "boot/loader.1/entries"
    ent.mkdir(parents=True)
    os.symlink("loader.1", sr / "boot/loader")
    (ent / "ostree-1.conf").write_text(BLS)
    k = sr / "boot/ostree/syn-abc"
    k.mkdir(parents=True)
    shutil.copyfile(kernel, k / "vmlinuz")
    (k / "initramfs.img").write_bytes(busybox_initramfs())
    (sr / "root/etc").mkdir(parents=True)
    (sr / "root/etc/os-release").write_text("ID=synthetic\n")
    write_grub_config(sr / "boot", firstboot=firstboot, timeout=0)
    return sr


def qemu_boot(disk: Path, *, uefi: bool, block_size: int) -> tuple[str, float]:
    """Boot under TCG with the project's QEMU runner (4096: 4K logical sectors on the
    virtio disk); return (console text, seconds)."""
    from imagebuilder.boot.qemu import boot

    res = boot(disk, uefi=uefi, accel="tcg", memory=1024, snapshot=True, block_size=block_size,
               expect=re.escape(MARKER), timeout=BOOT_TIMEOUT)
    return res.output, res.duration


def cmdline(console: str) -> str:
    m = re.search(r"^CMDLINE: (.*)$", console, re.M)
    assert m, f"no CMDLINE line on the console:\n{console[-3000:]}"
    return m.group(1)


@pytest.mark.parametrize("uefi,sector_size,firstboot", [
    pytest.param(False, 512, True, id="bios-512-firstboot"),
    pytest.param(True, 512, False, id="uefi-512"),
    pytest.param(True, 4096, True, id="uefi-4096-firstboot"),
])
def test_disk_boots(tmp_path, uefi, sector_size, firstboot):
    if uefi and not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        pytest.skip("needs OVMF (apt-get install ovmf)")
    sr = make_boot_sysroot(tmp_path, firstboot=firstboot)
    disk = tmp_path / "disk.raw"
    rec = build_disk(sr, disk, DiskOptions(size="1G", sector_size=sector_size, seed="boot"),
                     tmp_path / "work", epoch=1700000000)
    assert rec["bootloader"]["bios"] is (sector_size == 512)
    console, secs = qemu_boot(disk, uefi=uefi, block_size=sector_size)
    (tmp_path / "console.log").write_text(console)
    assert MARKER in console, console[-3000:]
    cl = cmdline(console)
    assert KARGS in cl
    assert "BOOT_IMAGE=/ostree/syn-abc/vmlinuz" in cl
    assert "ostree=/ostree/boot.1/syn/abc/0" in cl
    assert "$ignition_firstboot" not in cl  # GRUB expanded it
    assert ("ignition.firstboot" in cl.split()) is firstboot
    print(f"boot {'uefi' if uefi else 'bios'}/{sector_size}: {secs:.1f} s")
