"""Ignition in built images: OS integration files, config checks and embedding.

Debian's ``ignition`` package (2.14) ships the Ignition binary and its dracut module
``30ignition`` but nothing that makes it work on an OSTree system. The files under
``imagebuilder/data/ignition-integration/`` fill the gaps (each says why it exists):

* dracut module ``35imagebuilder-ignition`` (initramfs): the embedded config
  ``/boot/ignition/config.ign`` → ``/usr/lib/ignition/user.ign``; the stateroot ``/var``
  bind-mounted on ``/sysroot/var`` and populated by ``systemd-tmpfiles`` before the files
  stage; a real ``ignition-kargs-helper`` (BLS entry + grub.cfg, one reboot); a no-op
  ``setfiles`` when the image has no SELinux;
* ``/etc/dracut.conf.d/35-imagebuilder-ignition.conf``: the modules in every initramfs;
* ``ignition-firstboot-complete.service`` (real root): removes the firstboot stamp and
  the embedded config after a successful first boot;
* sshd drop-in reading ``~/.ssh/authorized_keys.d/*`` (where Ignition writes keys);
* ``/etc/selinux/config`` (``SELINUX=disabled``) when the tree has none;
* ``/etc/machine-id`` = ``uninitialized`` so systemd applies Ignition's presets.

:func:`install_integration` puts them into a root filesystem tree (before
``ostree.prepare`` runs dracut); :func:`embed_config` writes a config into the boot
partition tree; :func:`check_config` is the build-time gate for configs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidConfigError
from ..run import data_path, run, which
from . import spec
from .translate import read_version
from .validate import ensure_valid

log = logging.getLogger("imagebuilder.ignition.integration")

DATA_DIR = "ignition-integration"
DRACUT_MODULE = "35imagebuilder-ignition"
FIRSTBOOT_UNIT = "ignition-firstboot-complete.service"
EMBEDDED_CONFIG = "ignition/config.ign"  # on the boot partition
FIRSTBOOT_STAMP = "ignition.firstboot"  # on the boot partition
# Debian's Ignition 2.14 parses spec 3.0.0 - 3.3.0 (3.4.0 only as 3.4.0-experimental)
MAX_SPEC = spec.V3_3
IGNITION_UNITS_WITH_EMERGENCY = ("ignition-fetch-offline.service", "ignition-kargs.service",
                                 "ignition-disks.service", "ignition-mount.service",
                                 "ignition-files.service")


def data_root() -> Path:
    return data_path(DATA_DIR)


def files_digest() -> str:
    """sha256 over the integration files (path, mode, content): part of the stage options,
    so editing a file invalidates the cached tree."""
    h = hashlib.sha256()
    root = data_root()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            mode = 0o755 if os.access(p, os.X_OK) else 0o644
            h.update(f"{rel}\0{mode:o}\0".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


# --------------------------------------------------------------------------- config checks


@dataclass(frozen=True)
class CheckedConfig:
    """A config ready for Debian's Ignition: ``data`` is what gets embedded."""

    config: dict
    data: bytes
    version: str
    downgraded_from: str | None = None


def _unused_keys(report) -> set[str]:
    return {p.json_path or "" for p in report.warnings if p.kind == "unused-key"}


def check_config(data: bytes, source: str = "<config>", *, external: bool = True) -> CheckedConfig:
    """Validate a config for Debian's Ignition 2.14 (spec 3.0.0 - 3.3.0).

    Our validator first (all spec rules, with JSON paths). A config declaring a newer
    spec (3.4.0+) is accepted only if it uses nothing 3.3.0 lacks: it is re-validated
    as 3.3.0 (newer fields show up as unknown keys) and embedded with version 3.3.0.
    Then ``ignition-validate`` (Ignition 2.14's own parser) when installed.
    """
    from .validate import validate_config

    cfg = ensure_valid(data, source)
    version = read_version(cfg)
    downgraded: str | None = None
    if version > MAX_SPEC:
        before = _unused_keys(validate_config(data, source=source))
        lowered = dict(cfg)
        lowered["ignition"] = {**cfg["ignition"], "version": str(MAX_SPEC)}
        new_data = json.dumps(lowered, indent=2).encode() + b"\n"
        rep = validate_config(new_data, source=source)
        newer = sorted(_unused_keys(rep) - before)
        if rep.errors or newer:
            what = ", ".join(newer[:5]) if newer else rep.errors[0].format()
            raise InvalidConfigError(
                f"{source}: spec {version} config uses what Debian's Ignition 2.14 "
                f"(spec 3.0.0 - {MAX_SPEC}) does not support: {what}",
                hint=f"write the config for spec {MAX_SPEC} (Butane: variant fcos, version 1.4.0)")
        log.info("%s: spec %s config uses only %s features; embedding it as %s",
                 source, version, MAX_SPEC, MAX_SPEC)
        downgraded, cfg, data = str(version), lowered, new_data
    if external and which("ignition-validate"):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".ign") as f:
            f.write(data)
            f.flush()
            proc = run(["ignition-validate", f.name], check=False)
        if proc.returncode != 0:
            msg = (proc.stdout or b"").decode(errors="replace").strip() or \
                  (proc.stderr or b"").decode(errors="replace").strip()
            raise InvalidConfigError(f"{source}: ignition-validate (Ignition 2.14) rejects it: "
                                     + " ".join(msg.split())[:400])
    return CheckedConfig(cfg, data, str(read_version(cfg)), downgraded)


def embed_stage_options(path: Path) -> dict:
    """``ignition.embed`` stage options for a definition's ``ignition.config`` (validated here,
    so a bad config fails ``imagebuilder build``/``manifest`` before anything runs)."""
    raw = load_config_file(path)
    checked = check_config(raw, str(path))
    try:
        text = checked.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidConfigError(f"{path}: not UTF-8 text") from None
    return {"config": text, "source": path.name}


def load_config_file(path: str | os.PathLike[str]) -> bytes:
    from ..fsutil import read_input

    return read_input(path, "Ignition config")


# --------------------------------------------------------------------------- tree integration


@dataclass
class IntegrationResult:
    installed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files the tree already had (left alone)
    notes: list[str] = field(default_factory=list)

    def to_record(self) -> dict:
        return {"installed": self.installed, "kept": self.kept, "notes": self.notes,
                "files_digest": files_digest()}


def _copy(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)


def _mode_of(src: Path) -> int:
    return 0o755 if src.stat().st_mode & stat.S_IXUSR else 0o644


def check_tree(tree: Path) -> Path:
    """The tree's 30ignition module directory; InvalidConfigError with a hint if missing."""
    from ..ostree.prepare import resolve_in_tree

    if not (tree / "usr").is_dir():
        raise InvalidConfigError(f"{tree}: not a root filesystem (no /usr)")
    if (tree / "usr/etc").is_dir() and not (tree / "etc").exists():
        raise InvalidConfigError(f"{tree}: already prepared for OSTree",
                                 hint="ignition.integration must run before ostree.prepare")
    mod = resolve_in_tree(tree, "usr/lib/dracut/modules.d/30ignition")
    if not (mod / "module-setup.sh").is_file():
        raise InvalidConfigError(
            f"{tree}: Ignition is not installed in the tree (no dracut module 30ignition)",
            hint="add 'ignition' (and dracut, dracut-network, dbus) to source.packages")
    if not resolve_in_tree(tree, "usr/bin/dracut").exists():
        raise InvalidConfigError(f"{tree}: dracut is not installed in the tree",
                                 hint="add 'dracut' to source.packages")
    return mod


def install_integration(tree: Path) -> IntegrationResult:
    """Install the integration files into the root filesystem ``tree`` (``/etc`` not yet moved)."""
    from ..ostree.prepare import resolve_in_tree

    tree = tree.resolve()
    ign_mod = check_tree(tree)
    res = IntegrationResult()
    src = data_root()

    # the dracut module
    mod_src = src / "dracut" / DRACUT_MODULE
    mod_dst = resolve_in_tree(tree, f"usr/lib/dracut/modules.d/{DRACUT_MODULE}")
    if mod_dst.exists():
        shutil.rmtree(mod_dst)
    for f in sorted(mod_src.iterdir()):
        _copy(f, mod_dst / f.name, _mode_of(f))
    res.installed.append(f"/usr/lib/dracut/modules.d/{DRACUT_MODULE}/")

    # files for the real root
    root_src = src / "root"
    for f in sorted(p for p in root_src.rglob("*") if p.is_file()):
        rel = f.relative_to(root_src).as_posix()
        if rel.startswith("etc/ssh/") and not (tree / "etc/ssh").is_dir():
            res.notes.append(f"/{rel}: skipped, the tree has no OpenSSH (/etc/ssh)")
            continue
        dst = resolve_in_tree(tree, rel)
        if rel == "etc/selinux/config" and dst.exists():
            res.kept.append(f"/{rel}")
            continue
        _copy(f, dst, _mode_of(f))
        res.installed.append(f"/{rel}")

    # enable the firstboot-complete unit (a preset would only apply on first boot)
    unit_dir = resolve_in_tree(tree, "usr/lib/systemd/system")
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / FIRSTBOOT_UNIT
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"../{FIRSTBOOT_UNIT}")
    res.installed.append(f"/usr/lib/systemd/system/multi-user.target.wants/{FIRSTBOOT_UNIT}")

    # first boot detection for Ignition's systemd presets
    mid = tree / "etc/machine-id"
    if mid.is_symlink():
        mid.unlink()
    mid.write_text("uninitialized\n")
    os.chmod(mid, 0o444)
    res.installed.append("/etc/machine-id")

    # sshd must include the drop-in directory (Debian 12's sshd_config does)
    sshd = tree / "etc/ssh/sshd_config"
    if sshd.is_file() and "sshd_config.d/" not in sshd.read_text(errors="replace"):
        res.notes.append("/etc/ssh/sshd_config has no 'Include /etc/ssh/sshd_config.d/*.conf': "
                         "keys in ~/.ssh/authorized_keys.d are not read")

    # failure -> emergency: Debian's units must say so (we rely on it, not duplicate it)
    for unit in IGNITION_UNITS_WITH_EMERGENCY:
        p = ign_mod / unit
        if p.is_file() and "OnFailure=emergency.target" not in p.read_text():
            res.notes.append(f"{unit}: no OnFailure=emergency.target")
    log.info("ignition integration: %d files installed", len(res.installed))
    return res


# --------------------------------------------------------------------------- embedding


def embed_config(boot: Path, data: bytes) -> Path:
    """Write ``data`` as ``BOOT/ignition/config.ign`` (dir 0700, file 0600: may hold secrets)."""
    d = boot / "ignition"
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    path = boot / EMBEDDED_CONFIG
    tmp = path.with_name(".config.ign.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def config_summary(cfg: dict) -> dict:
    """A short description of a config for records and reports."""
    st = cfg.get("storage") or {}
    return {
        "version": (cfg.get("ignition") or {}).get("version"),
        "files": len(st.get("files") or []),
        "directories": len(st.get("directories") or []),
        "links": len(st.get("links") or []),
        "units": len((cfg.get("systemd") or {}).get("units") or []),
        "users": [u.get("name") for u in (cfg.get("passwd") or {}).get("users") or []],
        "kernel_arguments": cfg.get("kernelArguments") or {},
    }


def canonical_bytes(cfg: dict) -> bytes:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
