"""Ignition version handling: any bytes -> a config translated to the newest spec
(the result serialises and validates), or a typed rejection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.ignition.translate import translate_bytes  # noqa: E402
from imagebuilder.ignition.validate import validate_config  # noqa: E402

EXPECTED = TYPED


def seeds() -> list[Path]:
    return sorted((REPO / "fixtures" / "ignition").rglob("*.ign"))


def one_input(data: bytes) -> None:
    config = translate_bytes(data)
    validate_config(json.dumps(config, ensure_ascii=False).encode("utf-8"))
