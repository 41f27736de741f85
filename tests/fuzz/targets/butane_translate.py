"""Butane translation: any bytes -> an Ignition config (which serialises and passes our
validator) or problems with positions; never an exception. Local references resolve in
the corpus' files directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.butane.translate import translate  # noqa: E402
from imagebuilder.ignition.validate import validate_config  # noqa: E402

EXPECTED = TYPED
FILES = REPO / "fixtures" / "butane" / "files"


class Finding(Exception):
    """A translation that claims success but produced an invalid or unserialisable config."""


def seeds() -> list[Path]:
    return sorted((REPO / "fixtures" / "butane").rglob("*.bu"))


def one_input(data: bytes) -> None:
    result = translate(data, source="<fuzz>", files_dir=FILES, experimental=True)
    for p in result.problems:
        p.format().encode("utf-8")
    if result.config is None:
        return
    assert result.output is not None
    text = json.dumps(result.config, ensure_ascii=False).encode("utf-8")
    if result.target is not None and not result.target.experimental:
        report = validate_config(text)
        if report.errors:
            raise Finding(f"translated config is invalid: {report.errors[0].format()}")
