"""Helpers shared by the fuzz targets (files starting with ``_`` are not targets)."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.errors import ImageBuilderError

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "fixtures" / "coreos-installer"

# A clean rejection of bad input; InternalError (exit 70) is re-raised by the driver.
TYPED = (ImageBuilderError,)
