"""ISO 9660 reader + embed areas (igninfo.json, kargs.json, features.json, the legacy System
Area headers) + the embedded initrd: any bytes as an ISO -> typed errors only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import TYPED  # noqa: E402
from _iso_seeds import seed_dir  # noqa: E402

from imagebuilder.iso.areas import has_embed_areas  # noqa: E402
from imagebuilder.iso.image import IsoImage  # noqa: E402
from imagebuilder.iso.iso9660 import IsoFS  # noqa: E402

EXPECTED = TYPED
_FD = os.memfd_create("fuzz-iso")


def seeds() -> list[Path]:
    return sorted(seed_dir().glob("*.iso"))


def one_input(data: bytes) -> None:
    os.ftruncate(_FD, 0)
    os.pwrite(_FD, data, 0)
    fd = os.dup(_FD)
    try:
        fs = IsoFS(fd, path="<fuzz>")
    except BaseException:
        os.close(fd)
        raise
    try:
        has_embed_areas(fs)
        for _path, _e in zip(range(2000), fs.walk()):
            pass
        iso = IsoImage(fs)
        iso.inspect()
        iso.is_customized
        if iso.kargs_supported and not iso.kargs_damaged:
            iso.modify_kargs(append=["ib.fuzz=1"])
        iso.reset()
        iso.patches()  # (no new initrd: xz preset 9 costs ms a call; the writer is not fuzzed)
    finally:
        fs.close()
