"""Assemble a bootable raw disk from a sysroot tree (``boot/``, ``root/``, optional ``efi/``).

Steps: FCOS layout from the options -> sparse file + GPT -> one image per filesystem
(built from the directory trees, never mounted) -> copied into the disk at the
partition offsets (holes stay holes) -> GRUB for UEFI (BOOTX64.EFI in the ESP) and
BIOS (boot.img in the MBR, core.img in BIOS-BOOT).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..boot import grub
from ..errors import UserInputError
from . import filesystems as fs
from .gpt import write_gpt
from .layout import Layout, fcos_layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskOptions:
    size: int | str = "4G"
    sector_size: int = 512
    root_fs: str = "ext4"
    seed: str = "imagebuilder"
    sizes_mib: dict[str, int] = field(default_factory=dict)
    bios: bool | None = None  # None: on for 512-byte sectors, off for 4096
    uefi: bool = True
    xfs_method: str = "auto"  # see filesystems.make_xfs

    @classmethod
    def from_options(cls, o: dict) -> "DiskOptions":
        return cls(size=o.get("size", "4G"), sector_size=int(o.get("sector_size", 512)),
                   root_fs=o.get("root_fs", "ext4"), seed=str(o.get("seed", "imagebuilder")),
                   sizes_mib=dict(o.get("partitions") or {}), bios=o.get("bios"),
                   uefi=bool(o.get("uefi", True)), xfs_method=o.get("xfs_populate", "auto"))

    @property
    def want_bios(self) -> bool:
        return self.sector_size == 512 if self.bios is None else bool(self.bios)


def sparse_copy_into(src: Path, dst_fd: int, offset: int, limit: int) -> int:
    """Copy the data extents of file ``src`` into ``dst_fd`` at ``offset``; skip holes.

    Returns the number of bytes copied. Fails if src is larger than ``limit``.
    """
    copied = 0
    with open(src, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size > limit:
            raise UserInputError(f"{src}: {size} bytes do not fit in {limit}")
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            n = hole - data
            _copy_range(fd, dst_fd, data, offset + data, n)
            copied += n
            pos = hole
    return copied


def _copy_range(src_fd: int, dst_fd: int, off_in: int, off_out: int, n: int) -> None:
    """copy_file_range, falling back to pread/pwrite where the kernel refuses
    (EXDEV across filesystem types, EINVAL/ENOSYS/EOPNOTSUPP on some filesystems)."""
    while n > 0:
        try:
            k = os.copy_file_range(src_fd, dst_fd, n, off_in, off_out)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            k = 0
        if k == 0:  # fallback chunk
            buf = os.pread(src_fd, min(n, 4 << 20), off_in)
            if not buf:
                raise OSError(f"unexpected end of file at {off_in}")
            k = os.pwrite(dst_fd, buf, off_out)
        n -= k
        off_in += k
        off_out += k


def _check_sysroot(sysroot: Path) -> None:
    for d in ("boot", "root"):
        if not (sysroot / d).is_dir():
            raise UserInputError(f"{sysroot}: sysroot has no {d}/ directory",
                                 hint="the sysroot input must be the tree of ostree.deploy")
    if not (sysroot / "boot" / grub.GRUB_DIR / "grub.cfg").is_file():
        raise UserInputError(f"{sysroot}/boot/{grub.GRUB_DIR}/grub.cfg missing",
                             hint="run org.imagebuilder.grub.config before disk.image")


def build_disk(sysroot: Path, out: Path, opts: DiskOptions, workdir: Path, *,
               epoch: int = 0, timings: dict[str, float] | None = None) -> dict:
    """Build ``out`` (raw, sparse) from ``sysroot``. Returns the ``disk`` record (a pure
    function of the inputs); per-step seconds go into ``timings`` if given."""
    _check_sysroot(sysroot)
    if not (opts.want_bios or opts.uefi):
        raise UserInputError("neither bios nor uefi is enabled: the disk would not boot")
    if opts.want_bios and opts.sector_size != 512:
        raise UserInputError("BIOS boot is not supported on 4096-byte-sector disks",
                             hint="set bios: false (UEFI boots such disks)")
    layout: Layout = fcos_layout(opts.size, sector_size=opts.sector_size, seed=opts.seed,
                                 root_fs=opts.root_fs, sizes_mib=opts.sizes_mib)
    fs.check_fits(sysroot / "boot", layout.size("boot"), "boot partition")
    fs.check_fits(sysroot / "root", layout.size("root"), "root partition")
    workdir.mkdir(parents=True, exist_ok=True)
    if timings is None:
        timings = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.monotonic()
        timings[name] = round(now - t0, 3)
        t0 = now

    boot_fs, root_fs, esp_fs = (layout.filesystems[n] for n in ("boot", "root", "EFI-SYSTEM"))
    root_populate = "mkfs.ext4 -d"

    # ESP contents: sysroot/efi (if any) + our BOOTX64.EFI, mtimes normalized
    esp_dir = workdir / "esp"
    if esp_dir.exists():
        shutil.rmtree(esp_dir)
    esp_dir.mkdir()
    if (sysroot / "efi").is_dir():
        shutil.copytree(sysroot / "efi", esp_dir, dirs_exist_ok=True)
    if opts.uefi:
        (esp_dir / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
        grub.build_efi_image(esp_dir / "EFI" / "BOOT" / "BOOTX64.EFI", boot_fs.uuid)
    fs.set_mtimes(esp_dir, max(epoch, 315532800))  # FAT cannot store times before 1980
    lap("grub-efi")

    images: dict[str, Path] = {}
    images["EFI-SYSTEM"] = workdir / "esp.img"
    fs.make_vfat(images["EFI-SYSTEM"], layout.size("EFI-SYSTEM"), esp_dir, volid=esp_fs.volid or "",
                 label=esp_fs.label, sector_size=opts.sector_size, epoch=epoch)
    lap("esp")
    images["boot"] = workdir / "boot.img"
    fs.make_ext4(images["boot"], layout.size("boot"), sysroot / "boot", uuid=boot_fs.uuid,
                 label=boot_fs.label, hash_seed=boot_fs.hash_seed or boot_fs.uuid, epoch=epoch,
                 features=fs.EXT4_FEATURES_BOOT)
    lap("boot")
    images["root"] = workdir / "root.img"
    if root_fs.fstype == "ext4":
        fs.make_ext4(images["root"], layout.size("root"), sysroot / "root", uuid=root_fs.uuid,
                     label=root_fs.label, hash_seed=root_fs.hash_seed or root_fs.uuid, epoch=epoch)
    else:
        root_populate = fs.make_xfs(images["root"], layout.size("root"), sysroot / "root",
                                    uuid=root_fs.uuid, label=root_fs.label, method=opts.xfs_method)
    lap("root")

    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        with open(tmp, "wb") as f:
            f.truncate(layout.table.size_bytes)
        write_gpt(tmp, layout.table)
        with open(tmp, "r+b") as f:
            for name, img in images.items():
                sparse_copy_into(img, f.fileno(), layout.offset(name), layout.size(name))
                img.unlink()
        lap("assemble")
        bios_info = None
        if opts.want_bios:
            core = workdir / "core.img"
            grub.build_bios_core(core, boot_fs.uuid)
            bb = layout.partition("BIOS-BOOT")
            bios_info = grub.install_bios(tmp, core, bb.first_lba, bb.size(opts.sector_size),
                                          sector_size=opts.sector_size)
            lap("grub-bios")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(esp_dir)
    record = layout.to_dict()
    record.update({
        "filename": out.name,
        "root_fs": opts.root_fs,
        "seed": opts.seed,
        "bootloader": {"bios": bios_info is not None, "uefi": opts.uefi,
                       "efi_path": "EFI/BOOT/BOOTX64.EFI" if opts.uefi else None,
                       "grub_cfg": f"/{grub.GRUB_DIR}/grub.cfg", **({"bios_core": bios_info} if bios_info else {})},
        "reproducible": opts.root_fs == "ext4",
        "root_populate": root_populate,
    })
    log.info("disk %s: allocated %d MiB; seconds %s", out, os.stat(out).st_blocks >> 11, timings)
    return record
