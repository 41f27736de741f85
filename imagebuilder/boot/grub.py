"""GRUB without grub-install: grub.cfg from BLS entries, core images, boot sectors.

Debian's GRUB 2.06 has no ``blscfg`` module, so ``grub.cfg`` is generated from
``loader/entries/*.conf`` (newest version first, as BLS/ostree sort them), with
Fedora CoreOS' ``ignition.firstboot`` stamp logic.

BIOS: ``grub-mkimage -O i386-pc`` with an embedded early config builds core.img; it is
written into the BIOS-BOOT partition and GRUB's boot.img into the MBR code area (the
partition table bytes 440..511 are kept), with boot.img's kernel-sector field (0x5c)
set to core.img's first LBA and core.img's diskboot blocklist (0x1f4) to the LBA of
its second sector — what ``grub-bios-setup`` / osbuild's ``grub2.inst`` do.
UEFI: ``grub-mkimage -O x86_64-efi`` builds ``EFI/BOOT/BOOTX64.EFI`` (removable-media
path, no NVRAM entry needed) with the same early config.
The early config finds the boot filesystem by UUID (label ``boot`` as fallback) and
loads ``(boot)/grub/grub.cfg``; every module it needs is built into the image, so no
module directory is installed on the boot partition.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidConfigError, UserInputError
from ..run import run

GRUB_LIB = Path("/usr/lib/grub")
GRUB_DIR = "grub"  # on the boot partition: /grub/grub.cfg
COMMON_MODULES = ["part_gpt", "ext2", "search", "search_fs_uuid", "search_label", "normal",
                  "configfile", "linux", "echo", "test", "serial", "terminal", "gzio", "boot",
                  "ls", "cat", "halt", "reboot", "sleep", "true"]
BIOS_MODULES = ["biosdisk", *COMMON_MODULES]
EFI_MODULES = ["fat", "efi_gop", "efi_uga", "all_video", *COMMON_MODULES]

# boot.img / diskboot.img offsets (grub-core/boot/i386/pc/boot.S, diskboot.S)
BOOT_BPB_START, BOOT_BPB_END = 0x03, 0x5A
BOOT_KERNEL_SECTOR = 0x5C
BOOT_DRIVE_CHECK = 0x66
BOOT_CODE_END = 440  # 440..445 disk signature, 446..509 partition table, 510 signature
DISKBOOT_BLOCKLIST = 0x200 - 12  # start (u64), len (u16), segment (u16)


# ------------------------------------------------------------------ BLS entries

@dataclass(frozen=True)
class BlsEntry:
    filename: str
    title: str = ""
    version: str = ""
    linux: str = ""
    initrd: tuple[str, ...] = ()
    options: str = ""
    sort_key: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.filename[:-5] if self.filename.endswith(".conf") else self.filename


def parse_bls(path: Path) -> BlsEntry:
    keys: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition(" ")
        keys.setdefault(k, []).append(v.strip())
    if "linux" not in keys:
        raise InvalidConfigError(f"{path}: BLS entry has no 'linux' line")
    initrds: list[str] = []
    for v in keys.get("initrd", []):
        initrds += v.split()
    known = {"title", "version", "linux", "initrd", "options", "sort-key"}
    return BlsEntry(
        filename=path.name,
        title=keys.get("title", [path.stem])[0],
        version=keys.get("version", [""])[0],
        linux=keys["linux"][0],
        initrd=tuple(initrds),
        options=" ".join(keys.get("options", [])),
        sort_key=keys.get("sort-key", [""])[0],
        extra={k: v[0] for k, v in keys.items() if k not in known},
    )


def _segments(v: str) -> list[str]:
    return re.findall(r"\d+|[A-Za-z]+", v)


def vercmp(a: str, b: str) -> int:
    """rpm-style version comparison (what BLS sorting uses): -1, 0 or 1."""
    if a == b:
        return 0
    sa, sb = _segments(a), _segments(b)
    for x, y in zip(sa, sb):
        if x.isdigit() and y.isdigit():
            xi, yi = int(x), int(y)
            if xi != yi:
                return 1 if xi > yi else -1
        elif x.isdigit() != y.isdigit():
            return 1 if x.isdigit() else -1  # numeric segments are newer
        elif x != y:
            return 1 if x > y else -1
    if len(sa) != len(sb):
        return 1 if len(sa) > len(sb) else -1
    return 0


def sort_entries(entries: list[BlsEntry]) -> list[BlsEntry]:
    """BLS order: sort-key ascending, then version descending, then file name descending."""
    import functools

    def cmp(x: BlsEntry, y: BlsEntry) -> int:
        if x.sort_key != y.sort_key:
            if not x.sort_key or not y.sort_key:
                return -1 if x.sort_key else 1  # entries with a sort-key come first
            return -1 if x.sort_key < y.sort_key else 1
        c = vercmp(x.version, y.version)
        if c:
            return -c
        return (x.filename < y.filename) - (x.filename > y.filename)

    return sorted(entries, key=functools.cmp_to_key(cmp))


def entries_dir(boot: Path) -> Path:
    """``boot/loader/entries``, following ostree's loader -> loader.N symlink inside the tree."""
    loader = boot / "loader"
    if loader.is_symlink():
        target = os.readlink(loader)
        if os.path.isabs(target) or ".." in Path(target).parts:
            raise InvalidConfigError(f"{loader}: symlink leaves the boot tree: {target}")
        loader = boot / target
    return loader / "entries"


def load_entries(boot: Path) -> list[BlsEntry]:
    d = entries_dir(boot)
    files = sorted(d.glob("*.conf")) if d.is_dir() else []
    if not files:
        raise InvalidConfigError(f"no BLS entries in {d}",
                                 hint="run ostree.deploy first (it writes loader/entries/*.conf)")
    return sort_entries([parse_bls(f) for f in files])


# ------------------------------------------------------------------ grub.cfg

@dataclass(frozen=True)
class SerialConfig:
    unit: int = 0
    speed: int = 115200
    word: int = 8
    parity: str = "no"
    stop: int = 1


_CONSOLE_RE = re.compile(r"^ttyS(\d+)(?:,(\d+)([noe])?([5-8])?)?$")
_PARITY = {"n": "no", "o": "odd", "e": "even"}


def serial_from_console(console: list[str]) -> SerialConfig | None:
    """SerialConfig from kernel ``console=`` values: the first ``ttySN[,speed[parity[bits]]]``."""
    for c in console:
        m = _CONSOLE_RE.match(c)
        if m:
            return SerialConfig(unit=int(m.group(1)), speed=int(m.group(2) or 115200),
                                parity=_PARITY[m.group(3) or "n"], word=int(m.group(4) or 8))
    return None


def serial_from_options(o: dict) -> tuple[SerialConfig | None, tuple[str, ...]]:
    """(serial, terminals) from grub.config stage options (see its schema)."""
    s = o.get("serial")
    serial: SerialConfig | None
    if s is False:
        serial = None
    elif isinstance(s, dict):
        serial = SerialConfig(**s)
    elif "console" in o and s is None:
        serial = serial_from_console(list(o["console"]))
    else:
        serial = SerialConfig()
    terminals = tuple(o.get("terminals") or ("serial", "console"))
    if serial is None:
        terminals = tuple(t for t in terminals if t != "serial") or ("console",)
    return serial, terminals


def _sq(s: str) -> str:
    """GRUB single-quoted string."""
    return "'" + s.replace("'", "'\\''") + "'"


FIRSTBOOT_SNIPPET = """\
# Determine if this is a first boot and set the ${ignition_firstboot} variable
# which is used in the kernel command line (Fedora CoreOS logic).
set ignition_firstboot=""
if [ -f "/ignition.firstboot" ]; then
    # Default networking parameters to be used with ignition.
    set ignition_network_kcmdline=%s

    # Source in the `ignition.firstboot` file which could override the
    # above $ignition_network_kcmdline with important parameters for
    # networking to work, e.g. ip=...
    source "/ignition.firstboot"

    set ignition_firstboot="ignition.firstboot ${ignition_network_kcmdline}"
fi
"""


def render_grub_cfg(entries: list[BlsEntry], *, timeout: int = 1,
                    serial: SerialConfig | None = SerialConfig(),
                    terminals: tuple[str, ...] = ("serial", "console"),
                    firstboot_network_kargs: str = "") -> str:
    """grub.cfg text: terminal setup, timeout, FCOS firstboot logic, one menuentry per entry."""
    out = ["# Generated by imagebuilder from loader/entries/*.conf; GRUB here has no blscfg.",
           "set pager=1", ""]
    term = [t for t in terminals if t != "serial" or serial is not None]
    if serial is not None:
        out.append(f"serial --unit={serial.unit} --speed={serial.speed} --word={serial.word} "
                   f"--parity={serial.parity} --stop={serial.stop}")
    if term:
        out += [f"terminal_input {' '.join(term)}", f"terminal_output {' '.join(term)}"]
    out += ["", "set timeout_style=menu", f"set timeout={int(timeout)}", "set default=0", ""]
    out.append(FIRSTBOOT_SNIPPET % _sq(firstboot_network_kargs))
    out += ["# Import user defined configuration",
            "if [ -f $prefix/user.cfg ]; then", "  source $prefix/user.cfg", "fi", ""]
    for e in entries:
        out.append(f"menuentry {_sq(e.title or e.id)} --id {_sq(e.id)} {{")
        out.append("  insmod gzio")
        out.append(f"  linux {e.linux} {e.options}".rstrip())
        if e.initrd:
            out.append(f"  initrd {' '.join(e.initrd)}")
        out.append("}")
        out.append("")
    return "\n".join(out)


def write_grub_config(boot: Path, *, timeout: int = 1, serial: SerialConfig | None = SerialConfig(),
                      terminals: tuple[str, ...] = ("serial", "console"),
                      firstboot: bool | None = None, firstboot_network_kargs: str = "") -> Path:
    """Write ``boot/grub/grub.cfg``. ``firstboot``: True writes the ``boot/ignition.firstboot``
    stamp, False removes it, None leaves it as an earlier stage (ostree.deploy) made it."""
    entries = load_entries(boot)
    cfg = render_grub_cfg(entries, timeout=timeout, serial=serial, terminals=terminals,
                          firstboot_network_kargs=firstboot_network_kargs)
    gdir = boot / GRUB_DIR
    gdir.mkdir(mode=0o700, exist_ok=True)
    path = gdir / "grub.cfg"
    path.write_text(cfg)
    stamp = boot / "ignition.firstboot"
    if firstboot:
        stamp.write_text("")
    elif firstboot is False and stamp.exists():
        stamp.unlink()
    return path


# ------------------------------------------------------------------ images

def early_config(boot_uuid: str | None, label: str = "boot") -> str:
    """The config embedded in core.img / BOOTX64.EFI: find the boot fs, load grub.cfg."""
    # core.img runs this with GRUB's rescue parser, which has no `if`: so search by label
    # first and let the more specific UUID search override it when it finds the filesystem
    # (a failed `search --set` leaves the variable unchanged).
    lines = [f"search --no-floppy --label --set=bootfs {label}"]
    if boot_uuid:
        lines.append(f"search --no-floppy --fs-uuid --set=bootfs {boot_uuid}")
    lines += ["set root=$bootfs",
              f"set prefix=($root)/{GRUB_DIR}",
              f"configfile ($root)/{GRUB_DIR}/grub.cfg", ""]
    return "\n".join(lines)


def mkimage(platform: str, out: Path, early_cfg: str, modules: list[str], *,
            prefix: str = f"/{GRUB_DIR}") -> Path:
    d = GRUB_LIB / platform
    if not d.is_dir():
        pkg = "grub-pc-bin" if platform == "i386-pc" else "grub-efi-amd64-bin"
        from ..errors import ToolMissingError
        raise ToolMissingError(f"GRUB modules for {platform} not found in {d}",
                               hint=f"install with: apt-get install {pkg}")
    cfg = out.with_suffix(".early.cfg")
    cfg.write_text(early_cfg)
    try:
        run(["grub-mkimage", "-d", d, "-O", platform, "-o", out, "-p", prefix, "-c", cfg,
             *modules], env={"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")})
    finally:
        cfg.unlink()
    return out


def build_bios_core(out: Path, boot_uuid: str | None) -> Path:
    return mkimage("i386-pc", out, early_config(boot_uuid), BIOS_MODULES)


def build_efi_image(out: Path, boot_uuid: str | None) -> Path:
    return mkimage("x86_64-efi", out, early_config(boot_uuid), EFI_MODULES)


def install_bios(disk: Path, core_img: Path, core_lba: int, max_bytes: int, *,
                 sector_size: int = 512, boot_img: Path = GRUB_LIB / "i386-pc" / "boot.img") -> dict:
    """Write core.img at ``core_lba`` and boot.img into the MBR of ``disk``.

    The BIOS reads 512-byte sectors through INT 13h, so LBAs in boot.img and the
    diskboot blocklist are in 512-byte units; 4096-byte logical sectors are refused.
    """
    if sector_size != 512:
        raise UserInputError(
            "BIOS boot needs 512-byte sectors; this disk has 4096-byte sectors",
            hint="build with bios: false (UEFI only), as BIOS firmware reads 512-byte sectors")
    core = bytearray(core_img.read_bytes())
    if len(core) > max_bytes:
        raise InvalidConfigError(f"core.img is {len(core)} bytes; BIOS-BOOT holds {max_bytes}")
    if len(core) < 1024:
        raise InvalidConfigError(f"{core_img}: too small for a GRUB core image")
    start, nsec, seg = struct.unpack_from("<QHH", core, DISKBOOT_BLOCKLIST)
    want = (len(core) + 511) // 512 - 1
    if nsec != want or seg != 0x820:
        raise InvalidConfigError(f"{core_img}: unexpected diskboot blocklist "
                                 f"(len {nsec}, want {want}; segment {seg:#x})")
    struct.pack_into("<Q", core, DISKBOOT_BLOCKLIST, core_lba + 1)
    boot = boot_img.read_bytes()
    if len(boot) != 512:
        raise InvalidConfigError(f"{boot_img}: expected 512 bytes, got {len(boot)}")
    with open(disk, "r+b") as f:
        f.seek(0)
        mbr = bytearray(f.read(512))
        new = bytearray(boot[:BOOT_CODE_END]) + mbr[BOOT_CODE_END:512]
        new[BOOT_BPB_START:BOOT_BPB_END] = mbr[BOOT_BPB_START:BOOT_BPB_END]  # keep any BPB
        struct.pack_into("<Q", new, BOOT_KERNEL_SECTOR, core_lba)
        new[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"  # hard disk: skip drive check
        new[510:512] = b"\x55\xaa"
        f.seek(0)
        f.write(new)
        f.seek(core_lba * 512)
        f.write(core)
    return {"core_lba": core_lba, "core_size": len(core), "core_sectors": want + 1}
