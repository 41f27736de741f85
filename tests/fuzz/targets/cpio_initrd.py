"""Initrd (newc cpio, plain/gzip/xz/zstd, concatenated) reader: any bytes -> typed errors only,
bounded memory (a small expansion limit here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, TYPED  # noqa: E402
from _iso_seeds import seed_dir  # noqa: E402

from imagebuilder.iso import cpio  # noqa: E402

EXPECTED = TYPED


def seeds() -> list[Path]:
    import lzma
    import tempfile

    out = sorted(seed_dir().glob("initrd-*.img"))
    shared = SHARED / "initrd"
    if shared.is_dir():  # coreos-installer's edge cases, when ../shared is there
        d = Path(tempfile.mkdtemp(prefix="imagebuilder-fuzz-initrd-"))
        for p in sorted(shared.iterdir()):
            data = p.read_bytes()
            (d / p.name.removesuffix(".xz")).write_bytes(
                lzma.decompress(data) if p.name.endswith(".xz") else data)
        out += sorted(d.iterdir())
    return out


def one_input(data: bytes) -> None:
    scan = cpio.scan_initrd(data, limit=8 << 20)
    if scan.members:
        cpio.newc_archive(scan.members)
    cpio.scan_initrd(data, limit=8 << 20, keep=lambda p: p.endswith(".json"), keep_limit=4096)
