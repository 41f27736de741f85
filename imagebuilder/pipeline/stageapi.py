"""The contract between the engine and a stage executable (osbuild style).

A stage is an executable file ``osbuild-stages/org.imagebuilder.NAME`` with its
schema beside it in ``org.imagebuilder.NAME.meta.json``::

    {"summary": "...", "description": "...", "schema": {<JSON schema of options>}}

The engine runs it as ``PYTHON STAGE ARGS.json`` where ARGS.json is::

    {
      "tree":    "/abs/path",      # the pipeline's tree; the stage changes it in place
      "options": {...},            # already validated against the schema
      "inputs":  {"NAME": "/abs"}, # read-only trees of other pipelines, by input name
      "workdir": "/abs/path",      # scratch space, removed afterwards
      "meta":    {"id": "<stage id>", "source_epoch": 0}
    }

Exit status 0 means success; anything else fails the build. A stage writes human
progress to stderr. A stage that wants to report data to the engine (e.g. an
OSTree commit checksum) writes JSON to ``<tree>/.imagebuilder/<key>.json`` via
:func:`StageArgs.record`, and the engine collects those into meta.json.

Stages are thin: parse args, call library code in ``imagebuilder.*``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_DIR = ".imagebuilder"


@dataclass(frozen=True)
class StageArgs:
    tree: Path
    options: dict[str, Any]
    inputs: dict[str, Path] = field(default_factory=dict)
    workdir: Path = Path("/tmp")
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def source_epoch(self) -> int:
        return int(self.meta.get("source_epoch", 0))

    def input(self, name: str) -> Path:
        try:
            return self.inputs[name]
        except KeyError:
            raise SystemExit(f"stage needs input {name!r}; got {sorted(self.inputs)}") from None

    def record(self, key: str, value: Any) -> None:
        d = self.tree / RECORD_DIR
        d.mkdir(exist_ok=True)
        (d / f"{key}.json").write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "StageArgs":
        raw = json.loads(Path(path).read_text())
        return cls(
            tree=Path(raw["tree"]),
            options=raw.get("options") or {},
            inputs={k: Path(v) for k, v in (raw.get("inputs") or {}).items()},
            workdir=Path(raw.get("workdir") or "/tmp"),
            meta=raw.get("meta") or {},
        )


def stage_main(fn: Callable[[StageArgs], None]) -> None:
    """Entry point helper for stage executables: ``stage_main(main)``."""
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} ARGS.json", file=sys.stderr)
        sys.exit(2)
    args = StageArgs.load(sys.argv[1])
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(args.source_epoch))
    try:
        fn(args)
    except Exception as e:  # report one line + traceback to the build log, fail the stage
        from imagebuilder.errors import ImageBuilderError, ToolError

        if isinstance(e, ToolError) and e.stderr:
            print(e.stderr.rstrip(), file=sys.stderr)
        if not isinstance(e, ImageBuilderError):
            traceback.print_exc()
        print(f"stage failed: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
