"""Ignition validator: any bytes -> a report (never an exception)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.ignition.validate import validate_config  # noqa: E402

EXPECTED = TYPED


def seeds() -> list[Path]:
    return sorted((REPO / "fixtures" / "ignition").rglob("*.ign"))


def one_input(data: bytes) -> None:
    validate_config(data, source="<fuzz>")
