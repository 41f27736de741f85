"""Convert a plain root filesystem into the layout an OSTree commit needs (FCOS style).

What :func:`prepare_tree` does, in order (each step is idempotent on its own output):

1. checks ``os-release`` (ostree refuses to deploy without ``ID``/``PRETTY_NAME``);
2. finds the kernel (``/boot/vmlinuz-KVER`` or ``/usr/lib/modules/KVER/vmlinuz``);
3. in systemd trees, installs the imagebuilder self-check unit (``imagebuilder/data/selfcheck``;
   it does nothing unless the kernel command line has ``imagebuilder.selftest=1``);
4. puts an initramfs at ``/usr/lib/modules/KVER/initramfs.img``: built with dracut inside
   the tree (``--no-hostonly --reproducible -a ostree``), or a prebuilt one taken from the
   tree (the tiny OS ships its own busybox initramfs). ``auto`` (default) keeps an existing
   ``/usr/lib/modules/KVER/initramfs.img`` and runs dracut otherwise;
5. moves the kernel to ``/usr/lib/modules/KVER/vmlinuz``; empties ``/boot`` (a mount point);
6. writes ``/etc/machine-id`` (``uninitialized`` so systemd runs first-boot presets) and
   ``/etc/fstab``; removes ``/etc/hostname`` and ``/etc/resolv.conf`` when they are copies
   of the build host's (mmdebstrap copies both);
7. removes device nodes in ``/dev`` and the contents of ``/run`` and ``/tmp``
   (``ostree commit`` rejects device nodes);
8. FCOS symlinks: ``/home -> var/home``, ``/root -> var/roothome``, ``/opt``, ``/srv``,
   ``/mnt -> var/...``, ``/media -> run/media``, ``/usr/local -> ../var/usrlocal``;
9. empties ``/var``: directories and symlinks become ``tmpfiles.d`` lines in
   ``/usr/lib/tmpfiles.d/imagebuilder-var.conf``; package databases (``var_relocate``,
   default ``lib/dpkg``) move to ``/usr/lib/sysimage`` with a symlink line; other files
   are dropped (counted in the record);
10. moves ``/etc`` to ``/usr/etc``; creates ``/sysroot`` and ``ostree -> sysroot/ostree``.

The output only depends on the input tree and ``SOURCE_DATE_EPOCH`` (dracut runs with
``--reproducible``; generated files are sorted).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidConfigError
from ..run import data_path
from .chroot import chroot_run

log = logging.getLogger("imagebuilder.ostree.prepare")

TMPFILES_NAME = "imagebuilder-var.conf"
SYSIMAGE = "usr/lib/sysimage"
SELFCHECK_UNIT = "imagebuilder-selfcheck.service"
SELFCHECK_SCRIPT = "imagebuilder-selfcheck"

# top-level directory -> where it lives in an OSTree system (FCOS layout); the symlink
# target is relative to the symlink's directory
TOPLEVEL_LINKS: tuple[tuple[str, str], ...] = (
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("media", "run/media"),
)
# directories whose permissions the tmpfiles lines must get right even if the source
# tree lacked them
FALLBACK_MODES = {"home": 0o755, "roothome": 0o700, "opt": 0o755, "srv": 0o755,
                  "mnt": 0o755, "usrlocal": 0o755}

DEFAULT_FSTAB = ("LABEL=boot /boot auto defaults 0 2",)


@dataclass(frozen=True)
class PrepareOptions:
    kernel_version: str | None = None
    initramfs: str = "auto"  # "auto" | "dracut" | "prebuilt"
    dracut_modules: tuple[str, ...] = ("ostree",)
    dracut_args: tuple[str, ...] = ()
    machine_id: str = "uninitialized"  # "uninitialized" | "empty"
    fstab: tuple[str, ...] = DEFAULT_FSTAB
    var_relocate: tuple[str, ...] = ("lib/dpkg",)
    selfcheck: bool = True  # installed only in systemd trees; inert without imagebuilder.selftest=1

    @classmethod
    def from_dict(cls, d: dict) -> "PrepareOptions":
        return cls(
            kernel_version=d.get("kernel_version"),
            initramfs=d.get("initramfs", "auto"),
            dracut_modules=tuple(d.get("dracut_modules", ("ostree",))),
            dracut_args=tuple(d.get("dracut_args", ())),
            machine_id=d.get("machine_id", "uninitialized"),
            fstab=tuple(d.get("fstab", DEFAULT_FSTAB)),
            var_relocate=tuple(d.get("var_relocate", ("lib/dpkg",))),
            selfcheck=bool(d.get("selfcheck", True)),
        )


@dataclass
class PrepareResult:
    kernel_version: str
    initramfs: str
    os_id: str
    tmpfiles_lines: int = 0
    dropped_var_files: list[str] = field(default_factory=list)
    removed_dev_entries: int = 0

    def to_record(self) -> dict:
        return {
            "kernel_version": self.kernel_version,
            "initramfs": self.initramfs,
            "os_id": self.os_id,
            "tmpfiles_lines": self.tmpfiles_lines,
            "dropped_var_files": len(self.dropped_var_files),
            "removed_dev_entries": self.removed_dev_entries,
        }


# ---------------------------------------------------------------- helpers on the tree


def resolve_in_tree(tree: Path, rel: str, *, max_links: int = 40) -> Path:
    """Resolve ``rel`` inside ``tree`` following symlinks as if ``tree`` were ``/``."""
    parts = [p for p in rel.strip("/").split("/") if p and p != "."]
    cur: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if cur:
                cur.pop()
            continue
        candidate = tree.joinpath(*cur, name)
        if candidate.is_symlink():
            hops += 1
            if hops > max_links:
                raise InvalidConfigError(f"too many symlinks resolving /{rel} in {tree}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                cur = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        cur.append(name)
    return tree.joinpath(*cur)


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def read_os_release(tree: Path) -> dict[str, str]:
    """The tree's os-release; InvalidConfigError if missing or without ID/PRETTY_NAME."""
    for rel in ("etc/os-release", "usr/etc/os-release", "usr/lib/os-release"):
        p = resolve_in_tree(tree, rel)
        if p.is_file():
            info = parse_os_release(p.read_text(errors="replace"))
            if not (info.get("ID") or info.get("PRETTY_NAME")):
                raise InvalidConfigError(f"/{rel} in {tree} has neither ID nor PRETTY_NAME",
                                         hint="ostree needs one of them to name the boot entry")
            return info
    raise InvalidConfigError(
        f"{tree}: no os-release (looked for /etc/os-release and /usr/lib/os-release)",
        hint="the root filesystem must identify its OS; ostree deploy refuses without it")


def _modules_dir(tree: Path) -> Path:
    return resolve_in_tree(tree, "usr/lib/modules")


def find_kernel(tree: Path, kver: str | None = None) -> tuple[str, Path]:
    """Return (KVER, path of the kernel image) — ``/usr/lib/modules/K/vmlinuz`` or ``/boot/vmlinuz-K``."""
    mods = _modules_dir(tree)
    boot = tree / "boot"

    def image_for(k: str) -> Path | None:
        for p in (mods / k / "vmlinuz", boot / f"vmlinuz-{k}"):
            if p.is_file():
                return p
        return None

    if kver:
        img = image_for(kver)
        if img is None:
            raise InvalidConfigError(f"kernel {kver} not found in {tree} "
                                     f"(no /usr/lib/modules/{kver}/vmlinuz or /boot/vmlinuz-{kver})")
        return kver, img
    found = sorted(k.name for k in mods.iterdir() if k.is_dir() and image_for(k.name)) \
        if mods.is_dir() else []
    if not found and boot.is_dir():
        found = sorted(p.name[len("vmlinuz-"):] for p in boot.glob("vmlinuz-*") if p.is_file())
    if not found:
        raise InvalidConfigError(f"{tree}: no kernel found in /usr/lib/modules/*/vmlinuz or /boot/vmlinuz-*",
                                 hint="install a kernel package (e.g. linux-image-amd64) in the tree")
    if len(found) > 1:
        raise InvalidConfigError(f"{tree}: several kernels ({', '.join(found)})",
                                 hint="set the prepare stage's kernel_version option")
    img = image_for(found[0])
    assert img is not None
    return found[0], img


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def empty_dir(path: Path) -> int:
    """Remove everything inside ``path`` (keep the directory). Returns entries removed."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(mode=0o755, exist_ok=True)
    n = 0
    for child in sorted(path.iterdir()):
        _remove(child)
        n += 1
    return n


def _move_contents(src: Path, dst: Path) -> None:
    """Move the entries of directory src into dst (created with src's mode), remove src."""
    st = src.lstat()
    dst.mkdir(parents=True, exist_ok=True)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for child in sorted(src.iterdir()):
        target = dst / child.name
        if target.exists() or target.is_symlink():
            _remove(target)
        os.rename(child, target)
    src.rmdir()


# ---------------------------------------------------------------- the steps


def has_systemd(tree: Path) -> bool:
    return resolve_in_tree(tree, "usr/lib/systemd/systemd").is_file()


def install_selfcheck(tree: Path) -> None:
    """Install the self-check unit + script and enable it in multi-user.target."""
    src = data_path("selfcheck")
    unit_dir = resolve_in_tree(tree, "usr/lib/systemd/system")
    libexec = resolve_in_tree(tree, "usr/libexec")
    unit_dir.mkdir(parents=True, exist_ok=True)
    libexec.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / SELFCHECK_UNIT, unit_dir / SELFCHECK_UNIT)
    os.chmod(unit_dir / SELFCHECK_UNIT, 0o644)
    shutil.copyfile(src / SELFCHECK_SCRIPT, libexec / SELFCHECK_SCRIPT)
    os.chmod(libexec / SELFCHECK_SCRIPT, 0o755)
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / SELFCHECK_UNIT
    link.unlink(missing_ok=True)
    link.symlink_to(f"../{SELFCHECK_UNIT}")


def build_initramfs_dracut(tree: Path, kver: str, opts: PrepareOptions) -> None:
    if not resolve_in_tree(tree, "usr/bin/dracut").exists() and \
            not resolve_in_tree(tree, "usr/sbin/dracut").exists():
        raise InvalidConfigError(f"{tree}: dracut is not installed in the tree",
                                 hint="add the dracut package, or use initramfs: prebuilt")
    argv = ["dracut", "--no-hostonly", "--reproducible", "--force", "--quiet"]
    for m in opts.dracut_modules:
        argv += ["-a", m]
    argv += [*opts.dracut_args, "--kver", kver, f"/usr/lib/modules/{kver}/initramfs.img"]
    log.info("building the initramfs with dracut in the tree (kernel %s)", kver)
    chroot_run(tree, argv)


def take_prebuilt_initramfs(tree: Path, kver: str) -> None:
    dest = _modules_dir(tree) / kver / "initramfs.img"
    if dest.is_file():
        return
    for cand in (tree / "boot" / f"initrd.img-{kver}", tree / "boot" / f"initramfs-{kver}.img"):
        if cand.is_file():
            shutil.move(cand, dest)
            return
    raise InvalidConfigError(
        f"{tree}: initramfs: prebuilt, but no initramfs for {kver} "
        f"(looked for /usr/lib/modules/{kver}/initramfs.img, /boot/initrd.img-{kver})")


def place_kernel(tree: Path, kver: str, image: Path) -> None:
    dest = _modules_dir(tree) / kver / "vmlinuz"
    if image != dest:
        shutil.copyfile(image, dest)
    os.chmod(dest, 0o644)
    empty_dir(tree / "boot")
    os.chmod(tree / "boot", 0o755)
    # Debian's /vmlinuz, /initrd.img (+ .old) symlinks now dangle
    for pattern in ("vmlinuz*", "initrd.img*"):
        for p in tree.glob(pattern):
            if p.is_symlink():
                p.unlink()


def write_machine_id(tree: Path, mode: str) -> None:
    etc = tree / "etc"
    path = etc / "machine-id"
    if path.is_symlink():
        path.unlink()
    path.write_text("uninitialized\n" if mode == "uninitialized" else "")
    os.chmod(path, 0o444)
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()


# files bootstrap tools (mmdebstrap, debootstrap) copy from the build host into the tree
HOST_COPIED = ("etc/hostname", "etc/resolv.conf")


def drop_host_copies(tree: Path, host_root: Path = Path("/")) -> list[str]:
    """Remove files that are byte-identical copies of the build host's own (its hostname,
    its resolver configuration): they describe the build machine, not the image."""
    dropped = []
    for rel in HOST_COPIED:
        p, host = tree / rel, host_root / rel
        if p.is_symlink() or not p.is_file() or not host.is_file():
            continue
        try:
            same = p.read_bytes() == host.read_bytes()
        except OSError:
            continue
        if same:
            p.unlink()
            dropped.append("/" + rel)
    return dropped


def write_fstab(tree: Path, lines: tuple[str, ...]) -> None:
    if not lines:
        return
    text = "# written by imagebuilder (ostree.prepare)\n" + "".join(f"{ln}\n" for ln in lines)
    path = tree / "etc/fstab"
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, 0o644)


def clean_api_dirs(tree: Path) -> int:
    """Empty /dev, /run, /tmp; make sure /proc and /sys are empty dirs. Returns /dev entries removed."""
    removed = empty_dir(tree / "dev")
    empty_dir(tree / "run")
    empty_dir(tree / "tmp")
    os.chmod(tree / "tmp", 0o1777)
    for name in ("proc", "sys"):
        p = tree / name
        if os.path.ismount(p):
            raise InvalidConfigError(f"{p} is a mount point; refusing to prepare a live tree")
        empty_dir(p)
        os.chmod(p, 0o555)
    return removed


def make_toplevel_links(tree: Path) -> None:
    var = tree / "var"
    var.mkdir(exist_ok=True)
    (tree / "run").mkdir(exist_ok=True)
    for name, target in TOPLEVEL_LINKS:
        p = tree / name
        if p.is_symlink():
            if os.readlink(p) == target:
                continue
            p.unlink()
        elif p.is_dir():
            if target.startswith("var/"):
                _move_contents(p, tree / target)
            else:
                shutil.rmtree(p)
        p.symlink_to(target)
    local = tree / "usr/local"
    if local.is_symlink():
        local.unlink()
    elif local.is_dir():
        _move_contents(local, var / "usrlocal")
    local.symlink_to("../var/usrlocal")


def _tmpfiles_line(kind: str, path: str, mode: str = "-", uid: str = "-", gid: str = "-",
                   arg: str = "") -> str:
    return f"{kind} {path} {mode} {uid} {gid} -" + (f" {arg}" if arg else "")


def convert_var(tree: Path, relocate: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Empty /var; return (tmpfiles lines recreating it, relative paths of dropped files)."""
    var = tree / "var"
    lines: list[str] = []
    dropped: list[str] = []
    sysimage = tree / SYSIMAGE
    for rel in relocate:
        src = var / rel
        if src.is_symlink() or not src.is_dir():
            continue
        dst = sysimage / Path(rel).name
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        src.symlink_to(f"/{SYSIMAGE}/{Path(rel).name}")
    for name, mode in FALLBACK_MODES.items():
        d = var / name
        if not d.exists() and not d.is_symlink():
            d.mkdir(mode=mode)
            os.chmod(d, mode)
    for dirpath, dirnames, filenames in os.walk(var):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            p = base / name
            rel = "/" + p.relative_to(tree).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                lines.append(_tmpfiles_line("L", rel, arg=os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                lines.append(_tmpfiles_line("d", rel, f"{stat.S_IMODE(st.st_mode):04o}",
                                            str(st.st_uid), str(st.st_gid)))
            else:
                dropped.append(rel)
    lines.sort(key=lambda ln: ln.split(" ", 2)[1])
    empty_dir(var)
    os.chmod(var, 0o755)
    return lines, dropped


def write_tmpfiles(tree: Path, lines: list[str]) -> None:
    d = tree / "usr/lib/tmpfiles.d"
    d.mkdir(parents=True, exist_ok=True)
    text = ("# /var as it was in the source tree (written by imagebuilder ostree.prepare);\n"
            "# OSTree systems start with an empty /var, systemd-tmpfiles recreates this.\n"
            + "".join(f"{ln}\n" for ln in lines))
    (d / TMPFILES_NAME).write_text(text)
    os.chmod(d / TMPFILES_NAME, 0o644)


def move_etc(tree: Path) -> None:
    etc, usr_etc = tree / "etc", tree / "usr/etc"
    if usr_etc.exists() and etc.exists():
        raise InvalidConfigError(f"{tree}: both /etc and /usr/etc exist")
    if etc.is_dir() and not etc.is_symlink():
        os.rename(etc, usr_etc)
    if not usr_etc.is_dir():
        raise InvalidConfigError(f"{tree}: no /etc")


def make_sysroot(tree: Path) -> None:
    (tree / "sysroot").mkdir(mode=0o755, exist_ok=True)
    link = tree / "ostree"
    if link.is_symlink() or link.exists():
        _remove(link)
    link.symlink_to("sysroot/ostree")


def is_prepared(tree: Path) -> bool:
    return (tree / "usr/etc").is_dir() and not (tree / "etc").exists() and \
        (tree / "ostree").is_symlink()


def prepare_tree(tree: Path, opts: PrepareOptions) -> PrepareResult:
    """Convert ``tree`` in place; see the module docstring for the steps."""
    tree = tree.resolve()
    if not (tree / "usr").is_dir():
        raise InvalidConfigError(f"{tree}: not a root filesystem (no /usr)")
    if is_prepared(tree):
        raise InvalidConfigError(f"{tree}: already prepared for OSTree (/usr/etc exists, /etc does not)")
    if not (tree / "etc").is_dir():
        raise InvalidConfigError(f"{tree}: not a root filesystem (no /etc)")
    osrel = read_os_release(tree)
    kver, image = find_kernel(tree, opts.kernel_version)
    log.info("kernel %s (%s)", kver, image.relative_to(tree))
    (_modules_dir(tree) / kver).mkdir(parents=True, exist_ok=True)
    if opts.selfcheck and has_systemd(tree):
        install_selfcheck(tree)
    mode = opts.initramfs
    if mode == "auto":
        # a tree that already carries its OSTree initramfs (the tiny OS) keeps it;
        # anything else (a distribution rootfs with a host-only initrd) gets dracut
        mode = "prebuilt" if (_modules_dir(tree) / kver / "initramfs.img").is_file() else "dracut"
    if mode == "dracut":
        build_initramfs_dracut(tree, kver, opts)
    elif mode == "prebuilt":
        take_prebuilt_initramfs(tree, kver)
    else:
        raise InvalidConfigError(f"initramfs: {opts.initramfs!r} (expected dracut or prebuilt)")
    place_kernel(tree, kver, image)
    write_machine_id(tree, opts.machine_id)
    host_copies = drop_host_copies(tree)
    if host_copies:
        log.info("removed build-host copies: %s", ", ".join(host_copies))
    write_fstab(tree, opts.fstab)
    removed_dev = clean_api_dirs(tree)
    make_toplevel_links(tree)
    lines, dropped = convert_var(tree, opts.var_relocate)
    if dropped:
        log.info("dropped %d files from /var (OSTree commits start with an empty /var)", len(dropped))
    write_tmpfiles(tree, lines)
    move_etc(tree)
    make_sysroot(tree)
    return PrepareResult(kernel_version=kver, initramfs=mode,
                         os_id=osrel.get("ID", ""), tmpfiles_lines=len(lines),
                         dropped_var_files=dropped, removed_dev_entries=removed_dev)
