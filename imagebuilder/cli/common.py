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


def fix_typer_help() -> None:
    """typer (0.29) shows a value type for flags in help (``--force <bool>``) and wraps
    required arguments in braces in usage lines (``{ISO}``): show flags bare and arguments
    by their name, as click and every other CLI do."""
    try:
        from typer import core
    except ImportError:
        return
    option = getattr(core, "TyperOption", None)
    if option is not None and hasattr(option, "display_type_rich") \
            and not getattr(option, "_imagebuilder_fixed", False):
        typed = option.display_type_rich

        def display_type_rich(self, ctx):
            if getattr(self, "is_flag", False) or getattr(self, "count", False):
                return None
            return typed(self, ctx)

        option.display_type_rich = display_type_rich
        option._imagebuilder_fixed = True
    argument = getattr(core, "TyperArgument", None)
    if argument is not None and hasattr(argument, "_usage_display_name"):
        def _usage_display_name(self) -> str:
            name = self.display_name_raw
            if not self.required:
                name = f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        argument._usage_display_name = _usage_display_name
