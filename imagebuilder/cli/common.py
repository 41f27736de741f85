"""Helpers shared by the CLI modules: console, --json output, logging setup."""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from typing import Any

_state: dict[str, Any] = {"verbose": 0, "debug": False}


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console():
    from rich.console import Console

    return Console(highlight=False)


def setup_logging(verbose: int, debug: bool) -> None:
    import logging  # here, not at the top: the ISO fast path starts without it

    _state["verbose"] = verbose
    _state["debug"] = debug
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2 or debug:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("imagebuilder")
    root.handlers[:] = [handler]
    root.setLevel(level)


def is_debug() -> bool:
    return bool(_state["debug"])


def emit_json(obj: Any) -> None:
    """Print one JSON document to stdout (the machine-readable form of a report)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    """A human progress/status line on stderr (never pollutes stdout / --json)."""
    print(msg, file=sys.stderr)
