"""ignition merge: one input holds two configs (split at the first NUL byte, else in the
middle); merging them either succeeds (and the result is valid, serialisable JSON) or
is a typed rejection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import REPO, TYPED  # noqa: E402

from imagebuilder.ignition.merge import merge_bytes  # noqa: E402

EXPECTED = TYPED


def seeds() -> list[Path]:
    """Pairs from the merge fixtures (base NUL child), written to a temp directory."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="fuzz-merge-seeds-"))
    for case in sorted((REPO / "fixtures" / "ignition" / "merge").iterdir()):
        if not case.is_dir():
            continue
        base = case / "base.ign"
        for child in sorted(case.glob("child-*.ign")):
            p = out / f"{case.name}-{child.stem}"
            p.write_bytes(base.read_bytes() + b"\0" + child.read_bytes())
    return sorted(out.iterdir())


def split(data: bytes) -> tuple[bytes, bytes]:
    i = data.find(b"\0")
    if i < 0:
        i = len(data) // 2
        return data[:i], data[i:]
    return data[:i], data[i + 1:]


def one_input(data: bytes) -> None:
    base, child = split(data)
    result = merge_bytes(base, [(child, "child")], base_name="base")
    json.dumps(result.config, ensure_ascii=False).encode("utf-8")
