"""CoreOS live-ISO customization without rebuilding the ISO (coreos-installer's model).

The verbs, as one call each (what the CLI calls): :mod:`imagebuilder.iso.commands`
(``ignition_embed``, ``kargs_modify``, ``customize``...) and :mod:`imagebuilder.iso.pxe`
(``pxe_customize``, wraps, ``extract_pxe``). The building blocks underneath::

    from imagebuilder.iso import IsoImage, embed_initrd_members, read_embedded_members, write_result

    with IsoImage.open(path, writable=True) as iso:  # in place: read-write, locked
        embed_initrd_members(iso, {"etc/foo": (b"...", 0o100600)})
        iso.modify_kargs(append=["console=ttyS0"])
        write_result(iso, iso.patches(), output=None | "-" | "out.iso", force=False)

Submodules are imported lazily so that ``import imagebuilder.iso`` stays cheap.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from typing import Any

_EXPORTS = {
    "IsoImage": "image", "Region": "image", "InitrdTooLarge": "image",
    "embed_initrd_members": "image", "read_embedded_members": "image", "open_image": "image",
    "write_result": "write", "apply_in_place": "write", "write_copy": "write", "stream": "write",
    "Member": "cpio", "read_initrd": "cpio", "write_initrd": "cpio",
    "IGNITION_PATH": "paths", "NETWORK_DIR": "paths",
    "commands": None, "Customizations": "customize", "CUSTOMIZE_FLAGS": "customize",
    "modify_kargs": "kargs", "KargsTooLarge": "kargs",
    "IsoFS": "iso9660", "open_iso": "iso9660",
    "OsFeatures": "areas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = _EXPORTS[name]
    if mod is None:  # a submodule
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
