"""Cloud and hypervisor disk formats made from one raw disk image.

:func:`convert` turns the raw disk into one format (``raw`` is a sparse copy), each
module converting, patching what its tool stamps at random from the seed/epoch, and
checking: :mod:`.qcow2`, :mod:`.vmdk`, :mod:`.vhd` (with the Azure validator),
:mod:`.vhdx`, :mod:`.gce`, :mod:`.ova` (with the OVF check); :mod:`.compress` compresses
raw/qcow2/vhd artifacts.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidConfigError

FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "gce", "ova")
EXTENSIONS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vhd", "vhdx": "vhdx",
              "gce": "tar.gz", "ova": "ova"}


def check_format(fmt: str, where: str = "outputs") -> str:
    if fmt not in FORMATS:
        from ..pipeline.definition import did_you_mean

        raise InvalidConfigError(f"{where}: unknown format {fmt!r} (allowed: {', '.join(FORMATS)})",
                                 hint=did_you_mean(fmt, FORMATS))
    return fmt


def file_name(name: str, fmt: str, arch: str = "x86_64", platform: str | None = None) -> str:
    """The artifact's file name: ``NAME[-PLATFORM].ARCH.EXT``; GCE's is ``NAME-gcp.tar.gz``
    as its import tooling expects."""
    check_format(fmt)
    if fmt == "gce":
        return f"{name}-gcp.tar.gz"
    middle = f"-{platform}" if platform else ""
    return f"{name}{middle}.{arch}.{EXTENSIONS[fmt]}"


def _options(fmt: str, fn, opts: dict, fixed: tuple[str, ...]) -> dict:
    import inspect

    allowed = [p for p in inspect.signature(fn).parameters if p not in (*fixed, "raw", "dest", "force")]
    for key in opts:
        if key not in allowed:
            raise InvalidConfigError(f"{fmt}.{key}: unknown option (allowed: {', '.join(allowed) or 'none'})")
    return opts


def convert(fmt: str, raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, seed: str,
            epoch: int, name: str = "image", force: bool = False, options: dict | None = None):
    """Convert ``raw`` into ``fmt`` at ``dest``; returns a :class:`.common.Artifact`.
    ``options``: per-format settings (qcow2 ``compression``; vmdk ``adapter_type``,
    ``compat6``; vhd ``method``; gce ``level``; ova the :class:`.ova.OvfSettings` fields)."""
    check_format(fmt)
    opts = dict(options or {})
    if fmt == "raw":
        from ..image.disk import copy_sparse
        from .common import Artifact, named_temp_output, raw_size

        size = raw_size(raw)
        with named_temp_output(dest, force=force) as tmp, open(raw, "rb") as fi, open(tmp, "wb") as fo:
            copy_sparse(fi, fo, 0, size, 0)
        return Artifact(Path(dest), "raw", size)
    if fmt == "qcow2":
        from . import qcow2
        return qcow2.convert(raw, dest, force=force, **_options(fmt, qcow2.convert, opts, ()))
    if fmt == "vmdk":
        from . import vmdk
        return vmdk.convert(raw, dest, seed=seed, force=force, **_options(fmt, vmdk.convert, opts, ("seed",)))
    if fmt == "vhd":
        from . import vhd
        return vhd.convert(raw, dest, seed=seed, epoch=epoch, force=force,
                           **_options(fmt, vhd.convert, opts, ("seed", "epoch")))
    if fmt == "vhdx":
        from . import vhdx
        return vhdx.convert(raw, dest, seed=seed, force=force, **_options(fmt, vhdx.convert, opts, ("seed",)))
    if fmt == "gce":
        from . import gce
        return gce.convert(raw, dest, epoch=epoch, force=force, **_options(fmt, gce.convert, opts, ("epoch",)))
    from . import ova
    _options(fmt, ova.OvfSettings, opts, ("name",))
    settings = ova.OvfSettings(**{"name": name, **opts})
    return ova.convert(raw, dest, seed=seed, epoch=epoch, settings=settings, force=force)
