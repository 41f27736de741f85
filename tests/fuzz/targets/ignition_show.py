"""ignition show: any bytes -> a described config (text and --json), or a typed rejection."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.ignition.show import describe, render_text  # noqa: E402

EXPECTED = TYPED
_CONSOLE = None


def seeds() -> list[Path]:
    return sorted((REPO / "fixtures" / "ignition").rglob("*.ign"))


def one_input(data: bytes) -> None:
    global _CONSOLE
    report = describe(data, source="<fuzz>")
    json.dumps(report.doc).encode("utf-8")  # what --json prints
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(file=io.StringIO(), width=100, highlight=False)
    _CONSOLE.file = io.StringIO()
    render_text(report.doc, _CONSOLE)
    _CONSOLE.file.getvalue().encode("utf-8")
