"""LUKS2 header reader: metadata JSON wrapped in two checksummed header copies, and raw
header bytes (inputs starting with ``RAW:``) -> a header and its summary, or BadImageError."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.disk import luks2  # noqa: E402

EXPECTED = TYPED
HDR = 16384


def seeds() -> list[Path]:
    return sorted((REPO / "fixtures" / "luks2").glob("*.json"))


def _wrap(text: bytes) -> bytes:
    """Both header copies around ``text`` with valid checksums, so the JSON gets parsed."""
    area = text[:HDR - 4097].ljust(HDR - 4096, b"\0")
    out = b""
    for i, magic in enumerate((luks2.MAGIC_PRIMARY, luks2.MAGIC_SECONDARY)):
        raw = luks2.BINARY_HEADER.pack(magic, 2, HDR, 1, b"fuzz", b"sha256", bytes(64),
                                       b"7a1c2d3e-2222-4b4b-9c9c-000000000002", b"", i * HDR,
                                       b"", b"", b"")
        csum = hashlib.sha256(raw + area).digest()
        out += raw[:448] + csum.ljust(64, b"\0") + raw[512:] + area
    return out + bytes(1 << 16)


def one_input(data: bytes) -> None:
    blob = data[4:] if data.startswith(b"RAW:") else _wrap(data)
    header = luks2.read_header(io.BytesIO(blob))
    header.summary()
