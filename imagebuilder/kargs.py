"""Kernel arguments: the one model for every place imagebuilder reads or writes them.

A :class:`Karg` is ``KEY`` or ``KEY=VALUE``; a :class:`KernelArgs` is an ordered list of
them with the edit operations (append, delete, replace) and one renderer per boot config
parser. Everything that ends up on a kernel command line -- definition ``kernel_args`` and
``console``, the BLS ``options`` ostree writes, ``customize-image --karg-*``, ISO kargs --
is parsed here, checked here and rendered here.

How the consumers parse (the facts the rules below follow from)
---------------------------------------------------------------
The kernel (``next_arg()`` in lib/cmdline.c, used by ``parse_args``) splits the command
line at whitespace outside double quotes. A double quote toggles "in quotes" wherever it
appears; there is no escape character, so a value can never contain a double quote. For a
token ``"KEY=VALUE"`` or ``KEY="VALUE"`` the quotes are removed (``KEY`` = up to the first
``=``). Its ``isspace()`` is Latin-1's: besides ``\\t\\n\\v\\f\\r`` and space, byte 0xA0
separates arguments too -- a byte that occurs inside UTF-8 text (``à`` is ``C3 A0``).

GRUB script (the manual's "Shell-like scripting": words, quoting) splits words at
space/tab/newline and at the metacharacters ``{ } | & $ ; < >``; ``#`` starts a comment
at the start of a word; ``$NAME``/``${NAME}`` expand outside single quotes. Inside single
quotes every character is literal; a single quote cannot occur inside them, so it is
written ``'\\''`` (close, escaped quote, reopen). GRUB's ``linux`` command then builds the
kernel command line from its argument words (``grub_create_loader_cmdline``): words are
joined with spaces, a word containing a space is wrapped in double quotes, and every
``\\``, ``'`` and ``"`` in a word is preceded by a backslash -- which the kernel does not
remove. So ``'x=a b'`` reaches the kernel as ``"x=a b"`` (what we want), but ``it's``
would reach it as ``it\\'s``.

ISOLINUX/SYSLINUX (``parse_config_file`` in readconfig.c) reads a config line with
``fgets`` into a 4096-byte buffer (a longer line is cut and its rest read as the next
line), ends it at ``\\r`` or ``\\n``, and takes everything after ``append`` and its
whitespace verbatim; ``append -`` means "no arguments". SYSLINUX itself acts on
``initrd=`` in that line (it loads those files).

A BLS entry (Boot Loader Specification, type 1) is ``key value`` lines; ``options`` holds
the kernel command line in kernel syntax. ostree reads it with the kernel's quoting rule.

The rules
---------
* A kernel argument is printable ASCII (0x20-0x7E). NUL, newline, tab, every other
  control character and non-ASCII text are rejected (non-ASCII because of the 0xA0 rule
  above), with :class:`KargError` (an ``InvalidConfigError``, exit 3) naming where the
  argument came from.
* ``KEY`` is non-empty and has no space, ``=`` or ``"``. ``VALUE`` has no ``"``; it may
  contain ``=`` and, only when written in double quotes, spaces. Accepted spellings:
  ``KEY``, ``KEY=VALUE``, ``KEY="VALUE"``, ``"KEY=VALUE"``, ``"KEY"``; any other double
  quote (``foo="bar``, ``a"b``) is an error. ``x="a b"`` and ``"x=a b"`` are the same
  argument (key ``x``, value ``a b``); ``foo`` (no value) and ``foo=`` (empty value) are not.
* One item of a list (``kernel_args: [...]``, ``--karg-append``) is exactly one argument:
  ``x=a b`` is refused (quote the value: ``x="a b"``).

Renderers
---------
* kernel command line and BLS ``options`` (:meth:`KernelArgs.cmdline`,
  :meth:`KernelArgs.bls_options`): ``KEY``, ``KEY=VALUE``, ``KEY="VALUE"`` when the value
  has a space; joined with single spaces.
* GRUB script (:meth:`KernelArgs.grub_words`): each argument is one single-quoted word of
  its *unquoted* form (``'x=a b'``; GRUB adds the double quotes for the kernel), so ``$``,
  ``;``, ``#``, ``{``, ``}`` and the rest are literal. Arguments with ``'`` or ``\\`` are
  refused (GRUB would hand the kernel ``\\'``/``\\\\``). The only unquoted words are the
  GRUB variables in :data:`GRUB_VARIABLES` (``$ignition_firstboot``, which FCOS' grub.cfg
  expands to ``ignition.firstboot`` and the network arguments on a first boot).
* ISOLINUX ``append`` (:meth:`KernelArgs.isolinux_append`): the kernel form; refused when
  the line would not fit SYSLINUX's 4095-byte line or when it would read as ``append -``.

Edits (:meth:`KernelArgs.edit`, ostree/coreos-installer semantics): deletions first, then
appends, then replacements. ``append`` skips an argument that is already present (same key
and value). ``delete KEY`` removes every ``KEY`` and ``KEY=*``; ``delete KEY=VALUE``
removes exactly that argument. ``replace KEY=OLD=NEW`` turns every ``KEY=OLD`` into
``KEY=NEW`` (OLD and NEW without ``=``, as coreos-installer requires). With
``must_exist=True`` a delete or replace that matches nothing is an error ("no such kernel
argument").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import InvalidConfigError

#: GRUB variables that may stand as a whole argument and are left for GRUB to expand.
GRUB_VARIABLES = frozenset({"$ignition_firstboot"})
#: SYSLINUX reads config lines with fgets() into a 4096-byte buffer: 4095 bytes incl. "\n".
ISOLINUX_MAX_LINE = 4094

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_REPLACE = re.compile(r"^([^=]+)=([^=]+)=([^=]+)$")


class KargError(InvalidConfigError):
    """A kernel argument that is malformed or cannot be written into a boot config."""

    kind = "invalid kernel argument"


def _fail(source: str, text: str, problem: str, hint: str | None = None) -> KargError:
    where = f"{source}: " if source else ""
    return KargError(f"{where}kernel argument {text!r}: {problem}", hint=hint)


def _text_problem(text: str) -> tuple[str, str | None] | None:
    """(problem, hint) if ``text`` is not printable ASCII."""
    if _PRINTABLE.fullmatch(text):
        return None
    bad = next(c for c in text if not ("\x20" <= c <= "\x7e"))
    if bad == "\0":
        return "NUL character is not allowed", None
    if bad == "\n":
        return "newline is not allowed", None
    if ord(bad) < 0x20 or 0x7F <= ord(bad) <= 0x9F:
        return f"control character U+{ord(bad):04X} is not allowed", None
    return (f"non-ASCII character {bad!r} (U+{ord(bad):04X}) is not allowed",
            "kernel arguments are printable ASCII: the kernel splits UTF-8 text at byte 0xA0")


def check_text(text: str, source: str = "") -> None:
    """Raise KargError unless ``text`` is printable ASCII (no control characters)."""
    p = _text_problem(text)
    if p is not None:
        raise _fail(source, text, *p)


def _karg_problem(key: str, value: str | None) -> tuple[str, str | None] | None:
    p = _text_problem(key if value is None else f"{key}={value}")
    if p is not None:
        return p
    if not key:
        return "empty key", None
    if any(c in key for c in ' ="'):
        return "a key cannot contain a space, '=' or '\"'", None
    if value is not None and '"' in value:
        return "a value cannot contain '\"' (the kernel has no escape for it)", None
    return None


@dataclass(frozen=True)
class Karg:
    """One kernel argument: ``key`` or ``key=value`` (``value`` None: no ``=`` at all)."""

    key: str
    value: str | None = None

    def __post_init__(self) -> None:
        p = _karg_problem(self.key, self.value)
        if p is not None:
            raise _fail("", self.word, *p)

    @classmethod
    def parse(cls, text: str, source: str = "") -> "Karg":
        """Exactly one argument in kernel syntax (``x="a b"``, ``quiet``, ``root=LABEL=r``)."""
        args = parse_cmdline(text, source)
        if len(args) != 1:
            if not args:
                raise _fail(source, text, "empty")
            hint = None
            if "=" in text and '"' not in text:
                k, _, v = text.strip().partition("=")
                hint = f"quote a value with spaces: {k}=\"{v}\""
            raise _fail(source, text, f"{len(args)} arguments where one is expected", hint=hint)
        return args[0]

    @property
    def word(self) -> str:
        """The unquoted ``key`` / ``key=value`` (what the kernel hands to the parameter)."""
        return self.key if self.value is None else f"{self.key}={self.value}"

    def __str__(self) -> str:
        if self.value is None:
            return self.key
        if " " in self.value:
            return f'{self.key}="{self.value}"'
        return f"{self.key}={self.value}"

    def matches(self, spec: "Karg") -> bool:
        """Deletion match: ``KEY`` matches every ``KEY``/``KEY=*``, ``KEY=V`` only itself."""
        return self.key == spec.key and (spec.value is None or self.value == spec.value)


def _token(tok: str, source: str) -> Karg:
    """One token (as split by the kernel's rule) -> Karg, refusing stray double quotes."""
    if tok.startswith('"'):
        if len(tok) < 2 or not tok.endswith('"') or '"' in tok[1:-1]:
            raise _fail(source, tok, "unbalanced or misplaced double quote")
        inner = tok[1:-1]
        key, eq, value = inner.partition("=")
        return _make(key, value if eq else None, tok, source)
    key, eq, value = tok.partition("=")
    if '"' in key:
        raise _fail(source, tok, "misplaced double quote (quote the whole argument or its value)")
    if eq and value.startswith('"'):
        if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1]:
            raise _fail(source, tok, "unbalanced or misplaced double quote")
        value = value[1:-1]
    elif '"' in value:
        raise _fail(source, tok, "misplaced double quote (quote the whole value: KEY=\"VALUE\")")
    elif " " in value:  # cannot happen through split_cmdline; kept for direct callers
        raise _fail(source, tok, "a value with spaces must be in double quotes")
    return _make(key, value if eq else None, tok, source)


def _make(key: str, value: str | None, tok: str, source: str) -> Karg:
    p = _karg_problem(key, value)
    if p is not None:
        raise _fail(source, tok, *p)
    return Karg(key, value)


def split_cmdline(text: str, source: str = "") -> list[str]:
    """Tokens of a command line the way the kernel splits it: at spaces outside double
    quotes. Control characters and non-ASCII are refused first (see the module doc)."""
    check_text(text, source)
    tokens: list[str] = []
    cur: list[str] = []
    in_quote = False
    for c in text:
        if c == " " and not in_quote:
            if cur:
                tokens.append("".join(cur))
                cur = []
            continue
        if c == '"':
            in_quote = not in_quote
        cur.append(c)
    if in_quote:
        raise _fail(source, text, "unbalanced double quote")
    if cur:
        tokens.append("".join(cur))
    return tokens


def parse_cmdline(text: str, source: str = "") -> "KernelArgs":
    """A whole command line (a BLS ``options`` value, ``/proc/cmdline`` without its newline)."""
    return KernelArgs(tuple(_token(t, source) for t in split_cmdline(text, source)))


def grub_quote(text: str) -> str:
    """One GRUB script word that stands for ``text`` literally (single quotes, ``'\\''``)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _as_karg(item: "Karg | str", source: str) -> Karg:
    return item if isinstance(item, Karg) else Karg.parse(item, source)


@dataclass(frozen=True)
class KernelArgs(Sequence[Karg]):
    """An ordered, immutable list of kernel arguments."""

    args: tuple[Karg, ...] = ()

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, text: str, source: str = "") -> "KernelArgs":
        return parse_cmdline(text, source)

    @classmethod
    def from_items(cls, items: Iterable["Karg | str"], source: str = "") -> "KernelArgs":
        """One argument per item (a YAML list, repeated CLI flags); errors name
        ``source[i]``."""
        return cls(tuple(_as_karg(it, f"{source}[{i}]" if source else f"[{i}]")
                         for i, it in enumerate(items)))

    # ------------------------------------------------------------------ sequence
    def __iter__(self) -> Iterator[Karg]:
        return iter(self.args)

    def __len__(self) -> int:
        return len(self.args)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return KernelArgs(self.args[i])
        return self.args[i]

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            item = Karg.parse(item)
        return item in self.args

    def __add__(self, other: Iterable["Karg | str"]) -> "KernelArgs":
        return KernelArgs(self.args + tuple(_as_karg(o, "") for o in other))

    def __str__(self) -> str:
        return self.cmdline()

    def keys(self) -> list[str]:
        return [a.key for a in self.args]

    def values(self, key: str) -> list[str | None]:
        """Values of every ``key`` argument, in order (None for a bare ``key``)."""
        return [a.value for a in self.args if a.key == key]

    def get(self, key: str, default: str | None = None) -> str | None:
        """Value of the first ``key=...`` argument (``default`` if none or bare)."""
        for a in self.args:
            if a.key == key and a.value is not None:
                return a.value
        return default

    def has(self, key: str) -> bool:
        return any(a.key == key for a in self.args)

    # ------------------------------------------------------------------ edits
    def append(self, *items: "Karg | str", source: str = "") -> "KernelArgs":
        """Add each argument unless an equal one is already there."""
        out = list(self.args)
        for it in items:
            k = _as_karg(it, source)
            if k not in out:
                out.append(k)
        return KernelArgs(tuple(out))

    def delete(self, spec: "Karg | str", *, must_exist: bool = False,
               source: str = "") -> "KernelArgs":
        """Remove ``KEY`` and every ``KEY=*``, or exactly ``KEY=VALUE``."""
        s = _as_karg(spec, source)
        out = tuple(a for a in self.args if not a.matches(s))
        if must_exist and len(out) == len(self.args):
            raise _fail(source, str(s), "no such kernel argument",
                        hint=f"present: {self.cmdline() or '(none)'}")
        return KernelArgs(out)

    def replace(self, spec: str, *, must_exist: bool = False, source: str = "") -> "KernelArgs":
        """``KEY=OLD=NEW``: every ``KEY=OLD`` becomes ``KEY=NEW``."""
        m = _REPLACE.match(spec)
        if m is None:
            raise _fail(source, spec, "expected KEY=OLD=NEW (OLD and NEW without '=')")
        key, old, new = (v.strip('"') if v.startswith('"') and v.endswith('"') and len(v) > 1
                         else v for v in m.groups())
        o, n = _make(key, old, spec, source), _make(key, new, spec, source)
        if must_exist and o not in self.args:
            raise _fail(source, str(o), "no such kernel argument",
                        hint=f"present: {self.cmdline() or '(none)'}")
        return KernelArgs(tuple(n if a == o else a for a in self.args))

    def set(self, key: str, value: str | None, *, source: str = "") -> "KernelArgs":
        """Exactly one ``key=value``: the first ``key`` argument is replaced (its position
        kept), the others removed; appended if there was none."""
        new = _make(key, value, key if value is None else f"{key}={value}", source)
        out: list[Karg] = []
        done = False
        for a in self.args:
            if a.key == key:
                if not done:
                    out.append(new)
                    done = True
                continue
            out.append(a)
        if not done:
            out.append(new)
        return KernelArgs(tuple(out))

    def edit(self, *, delete: Iterable["Karg | str"] = (), append: Iterable["Karg | str"] = (),
             replace: Iterable[str] = (), must_exist: bool = False,
             source: str = "") -> "KernelArgs":
        """Deletions, then appends, then replacements (coreos-installer's order)."""
        out = self
        for d in delete:
            out = out.delete(d, must_exist=must_exist, source=source)
        out = out.append(*append, source=source)
        for r in replace:
            out = out.replace(r, must_exist=must_exist, source=source)
        return out

    # ------------------------------------------------------------------ renderers
    def cmdline(self) -> str:
        """Kernel command line syntax (values with spaces in double quotes)."""
        return " ".join(str(a) for a in self.args)

    def bls_options(self) -> str:
        """The value of a BLS ``options`` line (kernel syntax; ostree parses it that way)."""
        return self.cmdline()

    def grub_words(self, *, variables: frozenset[str] = GRUB_VARIABLES,
                   source: str = "") -> str:
        """The arguments as GRUB script words for a ``linux`` line (see the module doc)."""
        words = []
        for a in self.args:
            if a.value is None and a.key in variables:
                words.append(a.key)
                continue
            w = a.word
            if "'" in w or "\\" in w:
                raise _fail(source, str(a), "cannot be passed through GRUB: its linux command "
                            "hands ' and \\ to the kernel with a backslash in front")
            words.append(grub_quote(w))
        return " ".join(words)

    def isolinux_append(self, *, prefix: str = "append ", source: str = "") -> str:
        """The text after ``append`` on an ISOLINUX/SYSLINUX line (kernel syntax)."""
        text = self.cmdline()
        if text == "-":
            raise _fail(source, text, "'append -' means no arguments to SYSLINUX")
        if len((prefix + text).encode()) > ISOLINUX_MAX_LINE:
            raise KargError(f"{source + ': ' if source else ''}kernel arguments too long for an "
                            f"ISOLINUX line ({len(prefix + text)} bytes; SYSLINUX reads at most "
                            f"{ISOLINUX_MAX_LINE})")
        return text
