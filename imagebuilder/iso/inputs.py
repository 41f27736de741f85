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


def read_ignition(path) -> bytes:
    """A user's Ignition config ('-' = stdin), at most INPUT_LIMIT bytes; a Butane config
    (``*.bu``, or starting with ``variant:``) is translated to Ignition JSON first."""
    from ..ignition.load import default_files_dir, load_user_config

    return load_user_config(read_config(path), name=_where(str(path)), files_dir=default_files_dir(path))


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


def keyfile_problem(data: bytes) -> str | None:
    """Why data is not a NetworkManager keyfile (an ini-style text file), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return f"line {line} col {col}: not UTF-8 text (binary data?)"
    group = False
    for i, ln in enumerate(text.split("\n"), 1):
        ln = ln.rstrip("\r")
        bad = next((j for j, c in enumerate(ln) if c == "\0" or (c < " " and c != "\t")), None)
        if bad is not None:
            return f"line {i} col {bad + 1}: control character {ln[bad]!r} (binary data?)"
        if not _KEYFILE_LINE.match(ln):
            return f"line {i} col 1: neither [group], key=value nor a comment: {ln[:60]!r}"
        if ln.startswith("["):
            group = True
        elif "=" in ln and not ln.lstrip().startswith(("#", ";")) and not group:
            return f"line {i} col 1: key=value before the first [group]"
    if not group:
        return "line 1 col 1: no [group] (a keyfile starts with e.g. [connection])"
    return None


def check_keyfile(data: bytes, where: str, *, strict: bool,
                  warn: Callable[[str], None]) -> None:
    """Warn about (or with strict, refuse) a keyfile NetworkManager cannot read."""
    problem = keyfile_problem(data)
    if problem is not None:
        _report(f"{_where(where)}: not a NetworkManager keyfile: {problem}", strict=strict,
                warn=warn, hint="keyfiles are text: [connection], [ipv4]... groups of key=value")
