"""Butane's own checks of a decoded config (before translation), per version.

These are the rules Butane adds on top of Ignition's (which run on the generated
config): one source per resource, one of ``contents``/``contents_local``, what a
``with_mount_unit`` filesystem needs, modes that look decimal, ``boot_device``
layouts and methods, GRUB users, OpenShift metadata. Each returns
:class:`~.schema.Issue` objects at YAML paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .schema import V1_0, V1_4, V1_5, V1_6, V1_7, BObject, Issue, ListT, Target, YamlPath
from .sugar import QUADLET_EXTENSIONS, check_grub_user, quadlet_template

ERR_SOURCES = "only one of the following can be set: inline, local, source"
ERR_SYSTEMD_SOURCES = "only one of the following can be set: contents, contents_local"
ERR_DECIMAL_MODE = "unreasonable mode would be reasonable if specified in octal; remember to add a leading zero"
LAYOUTS_LEGACY = ("aarch64", "ppc64le", "x86_64")
LAYOUTS = ("aarch64", "ppc64le", "s390x-eckd", "s390x-virt", "s390x-zfcp", "x86_64")
CEX_KARG = "rd.luks.key=/etc/luks/cex.key"
_S390X_DEVICE = {"s390x-eckd": r"/dev/dasd[a-z]$", "s390x-zfcp": r"/dev/sd[a-z]$"}


def walk(value: Any, type_: Any, path: YamlPath = ()) -> Iterator[tuple[str, dict, YamlPath]]:
    """Every object in a decoded config: (type name, value, YAML path), parents first."""
    if isinstance(type_, BObject) and isinstance(value, dict):
        yield type_.name, value, path
        for f in type_.fields:
            if f.name in value:
                yield from walk(value[f.name], f.type, (*path, f.name))
    elif isinstance(type_, ListT) and isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, type_.item, (*path, i))


def check(config: dict, schema: BObject, target: Target) -> list[Issue]:
    v = target.fcos
    out: list[Issue] = []

    def err(path: YamlPath, msg: str) -> None:
        out.append(Issue("error", path, msg))

    def warn(path: YamlPath, msg: str) -> None:
        out.append(Issue("warning", path, msg))

    for name, obj, path in walk(config, schema):
        if name in ("Resource", "FileResource"):
            fields = ("inline", "source") if v == V1_0 and name == "FileResource" else ("local", "inline", "source")
            present = [f for f in fields if obj.get(f) is not None]
            if len(present) > 1:
                err((*path, present[-1]), ERR_SOURCES)
        elif name in ("File", "Directory") and obj.get("mode") is not None:
            if _decimal_mode(obj["mode"], directory=name == "Directory"):
                warn((*path, "mode"), ERR_DECIMAL_MODE)
        elif name == "Filesystem" and obj.get("with_mount_unit"):
            fmt, mount = obj.get("format"), obj.get("path")
            if v >= V1_4:
                if not fmt:
                    err((*path, "format"), "format is required if with_mount_unit is true")
                elif fmt != "swap" and not mount:
                    err((*path, "path"), "path is required if with_mount_unit is true and format is not swap")
            else:
                if not mount:
                    err((*path, "path"), "path is required if with_mount_unit is true and format is not swap")
                if not fmt:
                    err((*path, "format"), "format is required if with_mount_unit is true")
            if v >= V1_6 and mount and not re.match(r"^/(etc|var)(/|$)", mount):
                err((*path, "path"), "path must be under /etc or /var if with_mount_unit is true")
        elif name == "Tree" and not obj.get("local"):
            err(path, "local is required")
        elif name == "Quadlet" and not (obj.get("name") or "").endswith(QUADLET_EXTENSIONS):
            err((*path, "name"), "unsupported file extension for quadlet: must be one of " +
                ", ".join(QUADLET_EXTENSIONS[:-1]) + f", or {QUADLET_EXTENSIONS[-1]}")
        elif name == "Quadlet" and quadlet_template(obj.get("name") or "") is not None:
            for key in ("contents", "contents_local"):
                if obj.get(key) is not None:
                    err((*path, key), "template instances cannot have contents or contents_local")
        elif name in ("Unit", "Dropin", "Quadlet", "QuadletDropin") and obj.get("contents") is not None \
                and obj.get("contents_local") is not None:
            err((*path, "contents_local"), ERR_SYSTEMD_SOURCES)
        elif name == "BootDevice":
            out += _boot_device(obj, path, v)
        elif name == "GrubUser":
            out += [Issue("error", (*path, f), m) for f, m in check_grub_user(obj)]
        elif name == "Metadata":
            if not obj.get("name"):
                err((*path, "name"), "metadata.name is required")
            if not (obj.get("labels") or {}).get("machineconfiguration.openshift.io/role"):
                err((*path, "labels"), "machineconfiguration.openshift.io/role label is required")
        elif name == "OpenShift" and obj.get("kernel_type") not in (None, "", "default", "realtime"):
            err((*path, "kernel_type"), 'must be empty, "default", or "realtime"')
    if v >= V1_6:
        out += _disks_and_mounts(config)
    if target.variant == "openshift":
        if "metadata" not in config:
            err(("metadata", "name"), "metadata.name is required")
            err(("metadata", "labels"), "machineconfiguration.openshift.io/role label is required")
        if (target.openshift_minor or 0) >= 19:
            kargs = (config.get("openshift") or {}).get("kernel_arguments") or []
            cex = ((config.get("boot_device") or {}).get("luks") or {}).get("cex") or {}
            root_cex = any((lk.get("cex") or {}).get("enabled") and lk.get("name") == "root"
                           for lk in (config.get("storage") or {}).get("luks") or [])
            for wanted in (cex.get("enabled"), root_cex):
                if wanted and CEX_KARG not in kargs:
                    err(("openshift", "kernel_arguments"), f"'{CEX_KARG}' must be set as kernel argument "
                                                           "when CEX is enabled for the boot device")
    return out


def _boot_device(bd: dict, path: YamlPath, v) -> list[Issue]:
    out: list[Issue] = []
    layout = bd.get("layout")
    luks = bd.get("luks") or {}
    devices = (bd.get("mirror") or {}).get("devices") or []
    if devices and layout is None:
        sev = "error" if v >= V1_7 else "warning"
        out.append(Issue(sev, (*path, "mirror"), "boot_device.layout should be specified when "
                                                 "boot_device.mirror is specified"))
    if layout is not None:
        if v < V1_6:
            if layout not in LAYOUTS_LEGACY:
                out.append(Issue("error", (*path, "layout"), "layout must be one of: " + ", ".join(LAYOUTS_LEGACY)))
        else:
            device = luks.get("device")
            if layout in _S390X_DEVICE:
                if not device:
                    out.append(Issue("error", (*path, "layout"), "device is required for layouts: s390x-eckd, s390x-zfcp"))
                elif not re.search(_S390X_DEVICE[layout], device):
                    out.append(Issue("error", (*path, "layout"), "device name must start with /dev/dasd on "
                                                                 "s390x-eckd layout or /dev/sd on s390x-zfcp layout"))
            elif layout not in LAYOUTS:
                out.append(Issue("error", (*path, "layout"), "layout must be one of: " + ", ".join(LAYOUTS)))
            if layout.startswith("s390x") and devices:
                out.append(Issue("error", (*path, "layout"), "mirroring not supported on layouts: "
                                                             "s390x-eckd, s390x-zfcp, s390x-virt"))
    if v >= V1_6 and (luks.get("cex") or {}).get("enabled"):
        if layout is None:
            out.append(Issue("error", (*path, "luks", "cex"), "when using cex the targeted architecture must match s390x"))
        elif not layout.startswith("s390x"):
            out.append(Issue("error", (*path, "layout"), "when using cex the targeted architecture must match s390x"))
        if luks.get("tang") or luks.get("tpm2"):
            out.append(Issue("error", (*path, "luks"), "cannot use cex with clevis"))
    if len(devices) == 1:
        out.append(Issue("error", (*path, "mirror", "devices"), "mirroring requires at least two devices"))
    if v >= V1_7 and luks.get("device"):
        methods = any(t for t in luks.get("tang") or []) or luks.get("tpm2") or (luks.get("cex") or {}).get("enabled")
        if not methods:
            out.append(Issue("error", (*path, "luks"), "no method specified for luks"))
    return out


def _disks_and_mounts(config: dict) -> list[Issue]:
    out: list[Issue] = []
    storage = config.get("storage") or {}
    mirrored = set(((config.get("boot_device") or {}).get("mirror") or {}).get("devices") or [])
    for i, disk in enumerate(storage.get("disks") or []):
        if disk.get("device") == "/dev/disk/by-id/coreos-boot-disk" or disk.get("wipe_table") \
                or disk.get("device") in mirrored:
            continue
        for p, part in enumerate(disk.get("partitions") or []):
            if not part.get("number") and part.get("label") is not None:
                out.append(Issue("warning", ("storage", "disks", i, "partitions", p, "number"),
                                 "partitions cannot be reused by label; number must be specified except on "
                                 "boot disk (/dev/disk/by-id/coreos-boot-disk) or when wipe_table is true"))
    return out


def _decimal_mode(mode: int, *, directory: bool) -> bool:
    """A mode that is odd as written but ordinary read as octal (``644`` for ``0644``)."""
    if not 0 <= mode <= 7777:
        return False
    digits = f"{mode:04d}"
    if any(d in "89" for d in digits):
        return False
    octal = int(digits, 8)
    return not _typical(mode, directory) and _typical(octal, directory)


def _typical(mode: int, directory: bool) -> bool:
    if mode == 0:
        return True
    had_r = had_w = had_x = False
    for perm in (mode & 0o7, (mode >> 3) & 0o7, (mode >> 6) & 0o7):  # other, group, user
        r, w, x = bool(perm & 4), bool(perm & 2), bool(perm & 1)
        if (not r and had_r) or (not w and had_w) or (not x and had_x):
            return False
        if x and had_r and not had_x:
            return False
        if (w or x) and not r:
            return False
        had_r, had_w, had_x = had_r or r, had_w or w, had_x or x
    if not had_r:
        return False
    if directory:
        return had_x and not mode & 0o4000 and not (mode & 0o3000 and not had_w)
    if mode & 0o6000 and (not had_x or mode & 0o2):
        return False
    return not mode & 0o1000
