"""nmstate YAML/JSON -> NetworkManager keyfiles translator: any bytes -> keyfiles or a typed
error."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, SHARED, TYPED  # noqa: E402

from imagebuilder.iso import nmstate  # noqa: E402

EXPECTED = TYPED


def seeds() -> list[Path]:
    out = sorted((REPO / "fixtures").rglob("*nmstate*"))
    shared = SHARED / "customize"
    if shared.is_dir():
        out += sorted(shared.glob("*nmstate*"))
    return [p for p in out if p.is_file()]


def one_input(data: bytes) -> None:
    state = nmstate.load(data, source="<fuzz>")
    nmstate.translate(state, source="<fuzz>")
