"""A small command-line parser built from tables: the ``iso``, ``customize-iso`` and ``pxe``
commands (see :mod:`imagebuilder.cli.iso`, :mod:`imagebuilder.cli.pxe`).

Why not typer here: building the typer CLI costs ~200 ms of CPU (typer, click, pydantic,
rich) before the first byte of an ISO is read, and an in-place ``iso ignition embed``
is a few ms of work. So these commands are declared as data (:class:`Command`,
:class:`Opt`, :class:`Arg`) and parsed here, with help and usage errors generated from
the same tables; nothing heavier than the standard library's core is imported before the
command runs. :func:`run` is offered every command line first (by ``cli/main.py``) and
returns None for the commands it does not own.

Syntax: ``--long VALUE``, ``--long=VALUE``, ``-x VALUE``, ``-xVALUE``, clustered flags
(``-fv``), ``--`` ends the options, ``-`` is a positional (stdin/stdout). Global options
(``-v``/``--verbose``, ``--debug``) may come before the command words or anywhere after.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from ..errors import UserInputError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from typing import Any

PROG = "imagebuilder"
FLAG, VALUE, LIST = "flag", "value", "list"

#: command word -> the module whose COMMANDS/GROUPS tables declare it
TABLE_MODULES = {"iso": "imagebuilder.cli.iso", "customize-iso": "imagebuilder.cli.iso",
                 "pxe": "imagebuilder.cli.pxe"}


class Opt:
    """An option: ``names`` (``-o``, ``--output``), stored under ``dest``; ``kind`` FLAG
    (True when given), VALUE (the last one given... at most once) or LIST (repeatable)."""

    __slots__ = ("names", "dest", "kind", "metavar", "help", "required", "default")

    def __init__(self, names: Sequence[str], dest: str, kind: str = VALUE, metavar: str = "",
                 help: str = "", *, required: bool = False, default: Any = None) -> None:
        self.names, self.dest, self.kind = tuple(names), dest, kind
        self.metavar, self.help, self.required = metavar, help, required
        self.default = default

    @property
    def long(self) -> str:
        return next((n for n in self.names if n.startswith("--")), self.names[0])

    def spelled(self) -> str:
        short = [n for n in self.names if not n.startswith("--")]
        longs = [n for n in self.names if n.startswith("--")]
        s = ", ".join(short + longs)
        return s if self.kind == FLAG else f"{s} {self.metavar}"


class Arg:
    """A positional argument (``optional``: may be left out; then ``default``)."""

    __slots__ = ("dest", "metavar", "help", "optional", "default")

    def __init__(self, dest: str, metavar: str, help: str = "", *, optional: bool = False,
                 default: Any = None) -> None:
        self.dest, self.metavar, self.help = dest, metavar, help
        self.optional, self.default = optional, default


class Command:
    """One leaf command: its words (``("iso", "ignition", "embed")``), help text (first line
    = summary), options, positionals and the handler, called with the parsed values."""

    __slots__ = ("words", "help", "options", "args", "handler", "hidden")

    def __init__(self, words: Sequence[str], help: str, options: Sequence[Opt],
                 args: Sequence[Arg], handler: Callable[[dict[str, Any]], int | None], *,
                 hidden: bool = False) -> None:
        self.words, self.help, self.options = tuple(words), help, tuple(options)
        self.args, self.handler, self.hidden = tuple(args), handler, hidden

    @property
    def name(self) -> str:
        return " ".join(self.words)


class UsageError(UserInputError):
    """A malformed command line (exit 2)."""


HELP = Opt(("-h", "--help"), "help", FLAG, help="Show this message and exit.")


# ----------------------------------------------------------------------------- parsing

def parse(cmd: Command, argv: Sequence[str]) -> dict[str, Any]:
    """The values of argv (the words after the command's) for cmd; UsageError if wrong."""
    by_name: dict[str, Opt] = {}
    for o in (*cmd.options, HELP):
        for n in o.names:
            by_name[n] = o
    values: dict[str, Any] = {o.dest: (False if o.kind == FLAG else [] if o.kind == LIST
                                       else o.default) for o in cmd.options}
    seen: set[str] = set()
    positionals: list[str] = []
    args = list(argv)
    i = 0

    def need_value(o: Opt, given: str | None) -> str:
        nonlocal i
        if given is not None:
            return given
        if i >= len(args):
            raise UsageError(f"{cmd.name}: option {o.long} needs a value ({o.metavar})")
        i += 1
        return args[i - 1]

    def store(o: Opt, value: Any) -> None:
        if o.kind == LIST:
            values[o.dest].append(value)
        elif o.kind == VALUE and o.dest in seen:
            raise UsageError(f"{cmd.name}: option {o.long} given more than once")
        else:
            values[o.dest] = value
        seen.add(o.dest)

    only_positionals = False
    while i < len(args):
        a = args[i]
        i += 1
        if only_positionals or a == "-" or not a.startswith("-"):
            positionals.append(a)
            continue
        if a == "--":
            only_positionals = True
            continue
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            o = by_name.get(name)
            if o is None:
                raise UsageError(f"{cmd.name}: no such option: {name}" + _did_you_mean(
                    name, [n for n in by_name if n.startswith("--")]))
            if o is HELP:
                return {"help": True}
            if o.kind == FLAG:
                if eq:
                    raise UsageError(f"{cmd.name}: option {name} takes no value")
                store(o, True)
            else:
                store(o, need_value(o, val if eq else None))
            continue
        j = 1  # short options, possibly clustered: -fv, -iFILE, -i FILE
        while j < len(a):
            o = by_name.get("-" + a[j])
            if o is None:
                raise UsageError(f"{cmd.name}: no such option: -{a[j]}")
            if o is HELP:
                return {"help": True}
            if o.kind == FLAG:
                store(o, True)
                j += 1
                continue
            store(o, need_value(o, a[j + 1:] or None))
            break
    for o in cmd.options:
        if o.required and o.dest not in seen:
            raise UsageError(f"{cmd.name}: missing option {o.long} ({o.metavar})")
    need = [a for a in cmd.args if not a.optional]
    if len(positionals) < len(need):
        missing = " ".join(a.metavar for a in need[len(positionals):])
        raise UsageError(f"{cmd.name}: missing argument {missing}")
    if len(positionals) > len(cmd.args):
        extra = positionals[len(cmd.args)]
        raise UsageError(f"{cmd.name}: unexpected argument {extra!r}")
    for a, v in zip(cmd.args, positionals):
        values[a.dest] = v
    for a in cmd.args[len(positionals):]:
        values[a.dest] = a.default
    return values


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# ----------------------------------------------------------------------------- help

def _wrap(text: str, indent: int, width: int = 79) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=" " * indent, break_on_hyphens=False,
                         subsequent_indent=" " * indent) or [""]


def usage(cmd: Command) -> str:
    parts = [PROG, *cmd.words, "[OPTIONS]"]
    for o in cmd.options:
        if o.required:
            parts.append(f"{o.long} {o.metavar}")
    parts += [f"[{a.metavar}]" if a.optional else a.metavar for a in cmd.args]
    return "Usage: " + " ".join(parts)


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = min(max((len(n) for n, _ in rows), default=0), 28)
    out = []
    for name, text in rows:
        if len(name) > width:
            out.append(f"  {name}")
            out += _wrap(text, width + 4)
        else:
            first, *rest = _wrap(text, width + 4) if text else [""]
            out.append(f"  {name.ljust(width)}  {first.lstrip()}")
            out += rest
    return out


def format_help(cmd: Command) -> str:
    lines = [usage(cmd), ""]
    lines += [ln for para in cmd.help.strip().split("\n") for ln in _wrap(para.strip(), 2)]
    if cmd.args:
        lines += ["", "Arguments:"]
        lines += _rows([(a.metavar, a.help) for a in cmd.args])
    lines += ["", "Options:"]
    rows = []
    for o in (*cmd.options, HELP):
        text = o.help + (" [required]" if o.required else "")
        rows.append((o.spelled(), text))
    lines += _rows(rows)
    return "\n".join(lines) + "\n"


def format_group_help(words: tuple[str, ...], summary: str,
                      children: list[tuple[str, str]]) -> str:
    lines = [f"Usage: {PROG} {' '.join(words)} COMMAND [ARGS]...", ""]
    lines += _wrap(summary, 2)
    lines += ["", "Commands:"]
    lines += _rows(children)
    lines += ["", f"Run '{PROG} {' '.join(words)} COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- dispatch

def _tables(word: str) -> tuple[list[Command], dict[tuple[str, ...], str]]:
    import importlib

    mod = importlib.import_module(TABLE_MODULES[word])
    return mod.COMMANDS, mod.GROUPS


def _terminate(signum: int, _frame) -> None:
    """SIGTERM: unwind like Ctrl-C, so temp files are removed and in-place writes undone."""
    raise SystemExit(128 + signum)


def run(argv: Sequence[str]) -> int | None:
    """Run argv if it is a table command (its exit status), else None (not ours)."""
    args = list(argv)
    verbose, debug = 0, False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "--debug":
            debug = True
        elif a == "--verbose":
            verbose += 1
        elif len(a) > 1 and a[1:] == "v" * (len(a) - 1):
            verbose += len(a) - 1
        else:
            return None  # --help, --version...: the main CLI's business
        i += 1
    if i >= len(args) or args[i] not in TABLE_MODULES:
        return None
    commands, groups = _tables(args[i])
    rest: list[str] = []
    for n, a in enumerate(args[i:]):  # global options may also follow the command words
        if a == "--":
            rest += args[i + n:]
            break
        if a == "--debug":
            debug = True
        elif a == "--verbose" or (len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"}):
            verbose += 1 if a == "--verbose" else len(a) - 1
        else:
            rest.append(a)
    if verbose or debug or "logging" in sys.modules:
        from . import common

        common.setup_logging(verbose, debug)
    # else: no handler set up (that would import logging, ~7 ms): nothing on this path logs
    # below WARNING, and logging's last-resort handler prints a WARNING+ record to stderr as
    # the bare message, exactly like setup_logging's handler at its default level
    return dispatch(rest, commands, groups)


def dispatch_word(word: str, args: list[str]) -> int:
    """Run ``word args...`` (word: a key of TABLE_MODULES)."""
    commands, groups = _tables(word)
    return dispatch([word, *args], commands, groups)


def dispatch(words: list[str], commands: list[Command],
             groups: dict[tuple[str, ...], str]) -> int:
    """Find the command the leading words name and run it (help and usage included)."""
    best: Command | None = None
    for c in commands:
        if tuple(words[:len(c.words)]) == c.words and (best is None or len(c.words) > len(best.words)):
            best = c
    if best is None:
        return _group(words, commands, groups)
    try:
        values = parse(best, words[len(best.words):])
    except UsageError as e:
        print(usage(best), file=sys.stderr)
        e.hint = e.hint or f"see '{PROG} {best.name} --help'"
        raise
    if values.get("help"):
        sys.stdout.write(format_help(best))
        return 0
    import signal

    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        rc = best.handler(values)
    finally:
        signal.signal(signal.SIGTERM, old)
    return int(rc or 0)


def _group(words: list[str], commands: list[Command], groups: dict[tuple[str, ...], str]) -> int:
    """words name a group (or nothing known): its help, or an error for an unknown word."""
    depth = 0
    for n in range(len(words), 0, -1):
        if tuple(words[:n]) in groups:
            depth = n
            break
    prefix = tuple(words[:depth])
    children: dict[str, str] = {}
    for c in commands:
        if c.words[:depth] == prefix and len(c.words) > depth and not c.hidden:
            child = c.words[depth]
            sub = prefix + (child,)
            children.setdefault(child, groups.get(sub) or c.help.strip().split("\n")[0])
    rest = words[depth:]
    if rest and rest[0] not in ("-h", "--help"):
        where = " ".join(prefix)
        raise UsageError(f"{where}: no such command {rest[0]!r}" + _did_you_mean(rest[0], list(children)),
                         hint=f"see '{PROG} {where} --help'")
    sys.stdout.write(format_group_help(prefix, groups.get(prefix, ""), list(children.items())))
    return 0 if rest else 2


def stdin_notice(what: str) -> None:
    """Say that we read from stdin when it is a terminal (otherwise it looks like a hang)."""
    try:
        tty = os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        tty = False
    if tty:
        print(f"reading {what} from stdin (end with Ctrl-D) ...", file=sys.stderr)
