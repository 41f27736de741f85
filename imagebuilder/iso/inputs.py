"""What users hand the ISO/PXE verbs: configs and keyfiles, read with a size limit and
checked.

coreos-installer embeds whatever it is given (its documented leniency: ``iso ignition
embed`` takes any bytes). We keep that, but say so: an Ignition config that is not valid
JSON, not valid Ignition (with the validator's first error, its JSON path, line and
column) or a 2.x config, and a keyfile that is not a text keyfile, draw a warning on
stderr; ``strict=True`` (``--strict``) refuses them instead (exit 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import InvalidConfigError
from ..fsutil import read_input
from .cpio import DEFAULT_LIMIT

#: the largest config or keyfile accepted (anything bigger could not be read back)
INPUT_LIMIT = DEFAULT_LIMIT
_KEYFILE_LINE = re.compile(r"^(?:\s*$|\s*[#;].*$|\[[^\[\]]+\]\s*$|[^=\[\]\s][^=]*=.*$)")


def read_config(path, what: str = "Ignition config") -> bytes:
    """A user's file ('-' = stdin), at most INPUT_LIMIT bytes, with a clear error."""
    return read_input(path, what, limit=INPUT_LIMIT)


def _where(where: str) -> str:
    return "stdin" if where == "-" else where


def _report(problem: str, *, strict: bool, warn: Callable[[str], None], hint: str) -> None:
    if strict:
        raise InvalidConfigError(problem, hint=hint)
    warn(f"warning: {problem} (embedded anyway; --strict refuses it)")


def ignition_problem(data: bytes, where: str) -> str | None:
    """The first thing Ignition would reject in data (validator's error, JSON path, line
    and column), or None for a valid config."""
    from ..ignition.validate import validate_config

    report = validate_config(data, source=_where(where))
    if not report.errors:
        return None
    more = len(report.errors) - 1
    return (f"{_where(where)}: not a valid Ignition config: {report.errors[0].format()}"
            + (f" (and {more} more)" if more else ""))


def check_ignition(data: bytes, where: str, *, strict: bool,
                   warn: Callable[[str], None]) -> None:
    """Warn about (or with strict, refuse) a config Ignition would reject at boot."""
    problem = ignition_problem(data, where)
    if problem is not None:
        _report(problem, strict=strict, warn=warn,
                hint=f"imagebuilder ignition validate {where} lists every problem")
