"""Loading "a config a user gave us": Ignition JSON, or Butane translated to it.

:func:`load_user_config` is the one entry point every config-accepting verb uses
(``ignition validate/show/merge``, ``iso customize --dest-ignition/--live-ignition``,
``iso ignition embed -i``, ``customize-image --ignition``, a definition's
``ignition.config``): a file whose name ends in ``.bu`` or whose first line
is ``variant: …`` is Butane and is translated (errors fail with their YAML
position, warnings are reported); anything else is returned as is, for the
caller to validate as Ignition. Reads are capped at :data:`decode.MAX_CONFIG_SIZE`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import InvalidConfigError
from ..fsutil import read_input

#: the largest config file accepted (decode.py, which is heavy to import, uses the same cap)
MAX_CONFIG_SIZE = 32 * 1024 * 1024
BUTANE_SUFFIXES = (".bu", ".butane")
_FIRST_KEY = re.compile(rb"[ \t]*variant[ \t]*:")


def read_config_file(path: str | os.PathLike[str], what: str = "Ignition config") -> bytes:
    """A user's config file ('-' = stdin), at most MAX_CONFIG_SIZE bytes, with clear errors."""
    return read_input(path, what, limit=MAX_CONFIG_SIZE)


def default_files_dir(path: str | os.PathLike[str] | None) -> Path | None:
    """Where a Butane file's local references are looked up by default: its own directory
    (None for stdin or bytes: local references then need an explicit files directory)."""
    if path is None or str(path) == "-":
        return None
    return Path(path).resolve().parent


def is_butane(data: bytes, name: str | None = None) -> bool:
    """A Butane config: named ``*.bu``, or YAML whose first key is ``variant``."""
    if name and name.lower().endswith(BUTANE_SUFFIXES):
        return True
    for line in data.removeprefix(b"\xef\xbb\xbf").splitlines()[:200]:
        stripped = line.strip()
        if not stripped or stripped.startswith(b"#") or stripped in (b"---", b"%YAML 1.2", b"%YAML 1.1"):
            continue
        return bool(_FIRST_KEY.match(line))
    return False


def check_user_config(data: bytes, name: str, *, files_dir: str | os.PathLike[str] | None = None):
    """A validation report for a user's config (``ignition validate``): Ignition is validated;
    Butane is translated, and its report (problems at YAML lines) is the translation's."""
    from .validate import validate_config

    if not is_butane(data, name):
        return validate_config(data, source=name)
    from ..butane.translate import translate

    return translate(data, source=name, files_dir=files_dir, raw=True)


def _print_warning(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def load_user_config(src: str | os.PathLike[str] | bytes, *, files_dir: str | os.PathLike[str] | None = None,
                     name: str | None = None,
                     on_warning: Callable[[str], None] | None = _print_warning) -> bytes:
    """The Ignition JSON for a config a user gave us (a path, '-' for stdin, or bytes).

    Butane input is translated (``files_dir`` defaults to the file's directory); a
    translation error raises InvalidConfigError naming the first problem with its
    YAML line and column. Ignition JSON is returned unchanged: validating it is the
    caller's job (each verb has its own policy for warnings and versions).
    """
    if isinstance(src, bytes):
        data, name = src, name or "<config>"
        if len(data) > MAX_CONFIG_SIZE:
            from .decode import size_text

            raise InvalidConfigError(f"{name}: config is larger than the {size_text(MAX_CONFIG_SIZE)} limit")
    else:
        data = read_config_file(src)
        name = name or ("<stdin>" if str(src) == "-" else str(src))
        if files_dir is None:
            files_dir = default_files_dir(src)
    if not is_butane(data, name):
        return data
    from ..butane.translate import translate

    result = translate(data, source=name, files_dir=files_dir, raw=True)
    if result.errors or result.ignition is None:
        first = result.errors[0] if result.errors else None
        more = len(result.errors) - 1
        raise InvalidConfigError(
            f"{name}: Butane config: {first.format() if first else 'translation failed'}"
            + (f" (and {more} more error{'s' * (more > 1)})" if more > 0 else ""),
            hint=f"run: imagebuilder butane translate {name}")
    if on_warning is not None:
        for p in result.warnings:
            on_warning(f"{name}: {p.format()}")
    return result.ignition_json()
