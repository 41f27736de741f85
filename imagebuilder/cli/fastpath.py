"""Start-up fast path: run the hot ``iso`` verbs without building the typer CLI.

Building the CLI costs more than the work of an in-place embed: typer, its
vendored click and (typer >= 0.29) pydantic for parameter coercion are
~200 ms of CPU before the first byte of the ISO is read. An in-place
``iso ignition embed`` itself takes a few ms. So :func:`run` recognizes the
plain argument lists of the ISO verbs (table :data:`COMMANDS`), parses them
here and calls the same bodies the typer commands call
(:mod:`imagebuilder.cli.iso_ops`).

It only takes unambiguous command lines: known options spelled ``-x VALUE``,
``--long VALUE`` or ``--long=VALUE``, flags alone, the right number of
positionals, single-valued options at most once. Anything else -- ``--help``,
an unknown or clustered option, a missing value, a value that looks like an
option, ``--`` -- returns None and the caller runs the full typer CLI, which
then does the parsing, the help and the usage errors exactly as before.
``IMAGEBUILDER_NO_FASTPATH=1`` turns the fast path off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from typing import Any

# option kinds
FLAG, STR, PATH, STRS, PATHS = "flag", "str", "path", "strs", "paths"

_OUTPUT = ("output", STR, ("-o", "--output"))
_FORCE = ("force", FLAG, ("-f", "--force"))

# iso customize flags that patch the embed areas (the rebuild flags --add-file,
# --karg-append, --karg-delete and --volume-id are left to the typer CLI)
_CUSTOMIZE_LISTS = ("dest-ignition", "dest-console", "dest-karg-append", "dest-karg-delete",
                    "network-keyfile", "network-nmstate", "ignition-ca", "pre-install",
                    "post-install", "installer-config", "live-ignition", "live-karg-append",
                    "live-karg-replace", "live-karg-delete")


def _ops():
    from . import iso_ops

    return iso_ops


def _customize(a: dict[str, Any]) -> None:
    from ..iso.customize import Customizations
    from . import common

    ops = _ops()
    c = Customizations(dest_device=a.pop("dest_device"),
                       **{k.replace("-", "_"): tuple(a.pop(k.replace("-", "_")))
                          for k in _CUSTOMIZE_LISTS})
    ops.check_output_target(a["output"], a["force"])
    ops.customize_in_place_areas(a["input_iso"], a["output"], a["force"], c, notes=common.info)


_CUSTOMIZE_OPTS = [_OUTPUT, _FORCE, ("dest_device", STR, ("--dest-device",))] + [
    (k.replace("-", "_"), STRS, (f"--{k}",)) for k in _CUSTOMIZE_LISTS]

# command words -> (options [(dest, kind, spellings)], required options, handler(args))
# Every handler gets "input_iso" (the one positional ISO argument) besides the options.
COMMANDS: dict[tuple[str, ...], tuple[list, tuple[str, ...], Callable[[dict[str, Any]], None]]] = {
    ("iso", "ignition", "embed"): (
        [("ignition_file", PATH, ("-i", "--ignition-file")), _OUTPUT, _FORCE], (),
        lambda a: _ops().ignition_embed(a["input_iso"], a["ignition_file"], a["output"],
                                        a["force"])),
    ("iso", "ignition", "show"): (
        [], (), lambda a: _ops().ignition_show(a["input_iso"])),
    ("iso", "ignition", "remove"): (
        [_OUTPUT, _FORCE], (),
        lambda a: _ops().ignition_remove(a["input_iso"], a["output"], a["force"])),
    ("iso", "network", "embed"): (
        [("keyfile", PATHS, ("-k", "--keyfile")), _OUTPUT, _FORCE], ("keyfile",),
        lambda a: _ops().network_embed(a["input_iso"], a["keyfile"], a["output"], a["force"])),
    ("iso", "network", "remove"): (
        [_OUTPUT, _FORCE], (),
        lambda a: _ops().network_remove(a["input_iso"], a["output"], a["force"])),
    ("iso", "kargs", "modify"): (
        [("append", STRS, ("-a", "--append")), ("delete", STRS, ("-d", "--delete")),
         ("replace", STRS, ("-r", "--replace")), _OUTPUT, _FORCE], (),
        lambda a: _ops().kargs_modify(a["input_iso"], a["append"], a["delete"], a["replace"],
                                      a["output"], a["force"])),
    ("iso", "kargs", "reset"): (
        [_OUTPUT, _FORCE], (),
        lambda a: _ops().kargs_reset(a["input_iso"], a["output"], a["force"])),
    ("iso", "kargs", "show"): (
        [("default", FLAG, ("-d", "--default"))], (),
        lambda a: _ops().kargs_show(a["input_iso"], a["default"])),
    ("iso", "reset"): (
        [_OUTPUT, _FORCE], (),
        lambda a: _ops().iso_reset(a["input_iso"], a["output"], a["force"])),
    ("iso", "customize"): (_CUSTOMIZE_OPTS, (), _customize),
    ("customize-iso",): (_CUSTOMIZE_OPTS, (), _customize),
}


def _looks_like_option(v: str) -> bool:
    return v.startswith("-") and v != "-"


def parse(argv: Sequence[str]) -> tuple[int, bool, Callable[[dict[str, Any]], None],
                                         dict[str, Any]] | None:
    """(verbose, debug, handler, args) for a command line the fast path takes, else None."""
    argv = list(argv)
    i, verbose, debug = 0, 0, False
    while i < len(argv) and argv[i].startswith("-"):  # the global options
        a = argv[i]
        if a == "--debug":
            debug = True
        elif a == "--verbose":
            verbose += 1
        elif len(a) > 1 and a[1:] == "v" * (len(a) - 1):
            verbose += len(a) - 1
        else:
            return None
        i += 1
    for n in (3, 2, 1):
        key = tuple(argv[i:i + n])
        if len(key) == n and key in COMMANDS:
            break
    else:
        return None
    opts, required, handler = COMMANDS[key]
    spell: dict[str, tuple[str, str]] = {}
    args: dict[str, Any] = {}
    for dest, kind, names in opts:
        for name in names:
            spell[name] = (dest, kind)
        args[dest] = False if kind == FLAG else [] if kind in (STRS, PATHS) else None
    seen: set[str] = set()
    positionals: list[str] = []
    rest = argv[i + n:]
    j = 0
    while j < len(rest):
        a = rest[j]
        j += 1
        if not a.startswith("-") or a == "-":
            if not a or a == "-":
                return None
            positionals.append(a)
            continue
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if name not in spell:
            return None
        dest, kind = spell[name]
        if kind == FLAG:
            if eq or dest in seen:
                return None
            args[dest] = True
        else:
            if not eq:
                if j >= len(rest):
                    return None
                value = rest[j]
                j += 1
            if not value or _looks_like_option(value):
                return None
            if kind in (STR, PATH):
                if dest in seen:
                    return None
                args[dest] = Path(value) if kind == PATH else value
            else:
                args[dest].append(Path(value) if kind == PATHS else value)
        seen.add(dest)
    if len(positionals) != 1 or any(r not in seen for r in required):
        return None
    args["input_iso"] = Path(positionals[0])
    return verbose, debug, handler, args


def run(argv: Sequence[str]) -> int | None:
    """Run argv if the fast path takes it (the exit status, 0), else None (use typer)."""
    if os.environ.get("IMAGEBUILDER_NO_FASTPATH"):
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    verbose, debug, handler, args = parsed
    from . import common

    if verbose or debug or "logging" in sys.modules:
        common.setup_logging(verbose, debug)
    # else: no handler set up (that would import logging, ~7 ms): nothing on this path logs
    # below WARNING, and logging's last-resort handler prints a WARNING+ record to stderr as
    # the bare message, exactly like setup_logging's handler at its default level
    handler(args)
    return 0
