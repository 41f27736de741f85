"""Kernel arguments on ISOs: the kargs embed areas and the boot-config lines the rebuild
path edits, both through the one karg model (:mod:`imagebuilder.kargs`).

Edits (:func:`modify_kargs`) are the model's: deletions first, then appends (skipping
arguments already present), then replacements; ``KEY`` deletes every ``KEY``/``KEY=*``,
``KEY=VALUE`` exactly that argument, and deleting or replacing an argument that is not
there is an error ("no such kernel argument") instead of coreos-installer's silent no-op.

A kargs embed area holds ``kargs + end`` followed by ``pad`` up to exactly ``size`` bytes;
reading strips trailing pad, then trailing end characters, then whitespace. The longest
kargs that fit are ``size - 1`` bytes. The same text lands verbatim in the ISOLINUX
``append`` line *and* in GRUB's ``linux`` line (coreos-installer writes one text to every
area), so an argument written there must mean the same to GRUB's script parser: no GRUB
metacharacter, quote, backslash or comment sign (:func:`check_area_safe`). Arguments that
need those can only be passed by rebuilding a config (the rebuild path quotes them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import BadImageError, UserInputError

# imagebuilder.kargs (and its dataclasses) is imported inside the functions that edit:
# reading and writing an area is on the in-place embed's start-up path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..kargs import Karg, KernelArgs

# characters GRUB's script lexer treats specially in an unquoted word (plus the quotes,
# which only the double-quoted kernel form would need)
_GRUB_SPECIAL = set("{}|&$;<>#'\\")
_GRUB_BARE = re.compile(r"[A-Za-z0-9_.,:/=+@%^~!*?()\[\]-]+")
_SHOW = 120


class KargsTooLarge(UserInputError):
    """The new kernel arguments do not fit the embed area."""


def _clip(text: str) -> str:
    """A string for an error message: escaped, at most ~120 characters."""
    r = repr(text)
    return r if len(r) <= _SHOW else r[:_SHOW] + f"... ({len(text)} characters)"


def check_area_safe(args: KernelArgs, source: str = "") -> None:
    """Refuse arguments whose text would read differently to GRUB than to the kernel."""
    from ..kargs import KargError

    for a in args:
        bad = sorted(_GRUB_SPECIAL.intersection(a.word))
        if bad or '"' in str(a):
            what = " ".join(bad) if bad else '"'
            raise KargError(
                f"{source + ': ' if source else ''}kernel argument {str(a)!r}: {what} cannot "
                "go into a kargs embed area (its text is used verbatim in the ISO's GRUB "
                "config, where it would change the command)",
                hint="such arguments can only be set by rebuilding the boot configs "
                     "(iso customize --karg-append on an ISO without embed areas)")


def modify_kargs(current: str, *, append: Sequence[str] = (), delete: Sequence[str] = (),
                 replace: Sequence[str] = (), source: str = "") -> str:
    """Apply delete -> append -> replace (K=OLD=NEW) to a kargs string; the new text."""
    from ..kargs import KargError, KernelArgs

    try:
        args = KernelArgs.parse(current, source)
    except KargError as e:
        raise BadImageError(f"{source + ': ' if source else ''}the ISO's current kernel "
                            f"arguments cannot be parsed: {e.message}",
                            hint="iso kargs reset restores the defaults") from None
    added = KernelArgs.from_items(append, f"{source + ': ' if source else ''}append")
    new = args.edit(delete=delete, append=added, replace=replace, must_exist=True,
                    source=source)
    check_area_safe(KernelArgs(tuple(a for a in new if a not in args)), source)
    return new.cmdline()


def parse_area(contents: bytes, *, pad: str = "#", end: str = "\n") -> str:
    """The kargs stored in one area."""
    try:
        text = contents.decode("utf-8")
    except UnicodeDecodeError:
        raise BadImageError("invalid UTF-8 in karg area") from None
    return text.rstrip(pad).rstrip(end).strip()


def format_area(kargs: str, *, size: int, pad: str = "#", end: str = "\n",
                source: str = "") -> bytes:
    """The bytes of one area holding kargs; KargsTooLarge if they don't fit."""
    text = kargs.strip().encode("utf-8")
    if len(text) >= size:
        raise KargsTooLarge(
            f"{source + ': ' if source else ''}kargs too large for area: {len(text) + 1} vs {size}",
            hint=f"the maximum kernel argument length for this ISO is {size - 1} bytes")
    body = text + end.encode("utf-8")
    return body + pad.encode("utf-8") * (size - len(body))


# ------------------------------------------------------------------ boot-config lines

def _item(token: str, grub: bool) -> Karg | str:
    """A token of an existing kernel line: a Karg when the model reads it, else the raw
    token (kept verbatim, never matched)."""
    from ..kargs import Karg, KargError

    if grub and len(token) >= 2 and token[0] == token[-1] == "'" and "'" not in token[1:-1]:
        token = token[1:-1]
        try:
            return Karg.parse(f'"{token}"' if " " in token else token)
        except KargError:
            return "'" + token + "'"
    if grub and _GRUB_SPECIAL.intersection(token):
        return token
    try:
        return Karg.parse(token)
    except KargError:
        return token


def _grub_word(a: Karg) -> str:
    """A GRUB script word for a: bare when that is literal, else single-quoted."""
    from ..kargs import KernelArgs

    return a.word if _GRUB_BARE.fullmatch(a.word) else KernelArgs((a,)).grub_words()


def edit_line(args: str, append: KernelArgs, delete: KernelArgs, *, grub: bool,
              source: str = "") -> str:
    """Edit the argument text of one GRUB ``linux`` (``grub=True``) or ISOLINUX ``append``
    line: delete (``KEY`` = every ``KEY``/``KEY=*``, ``KEY=V`` exactly), then append what
    is not there yet; unknown tokens are kept as they are."""
    from ..kargs import Karg, KernelArgs

    items: list[Karg | str] = [_item(t, grub) for t in args.split()]
    for d in delete:
        items = [i for i in items if not (isinstance(i, Karg) and i.matches(d))]
    present = [i for i in items if isinstance(i, Karg)]
    for a in append:
        if a not in present:
            items.append(a)
            present.append(a)
    if grub:
        words = [_grub_word(i) if isinstance(i, Karg) else i for i in items]
        return " ".join(words)
    parsed = KernelArgs(tuple(i for i in items if isinstance(i, Karg)))
    parsed.isolinux_append(source=source)  # refuses what SYSLINUX would misread
    return " ".join(str(i) for i in items)


__all__ = ["KargsTooLarge", "modify_kargs", "parse_area", "format_area", "check_area_safe",
           "edit_line"]
