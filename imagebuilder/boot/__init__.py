"""Booting images: the QEMU runner (``imagebuilder.boot.qemu``).

``from imagebuilder.boot import boot, BootResult`` is the library entry point
(the import is lazy so other ``imagebuilder.boot`` modules stay cheap to import).
"""

from __future__ import annotations

__all__ = ["boot", "BootResult"]


def __getattr__(name: str):
    if name in __all__:
        from . import qemu

        return getattr(qemu, name)
    raise AttributeError(name)
