"""Kernel-argument editing and the on-disk format of a kargs embed area.

Edit semantics are coreos-installer's ``KargsEditor``: whatever the order of
the flags, deletions run first, then appends, then replacements; matching is
a plain substring match on `` karg `` (quoted arguments are not understood).

An area holds ``kargs + end`` followed by ``pad`` up to exactly ``size``
bytes; reading strips trailing pad, then trailing end characters, then
whitespace. The longest kargs that fit are ``size - 1`` bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import BadImageError, UserInputError

_REPLACE_RE = re.compile(r"^([^=]+)=([^=]+)=([^=]+)$")


class KargsTooLarge(UserInputError):
    """The new kernel arguments do not fit the embed area."""


def modify_kargs(current: str, *, append: Sequence[str] = (), delete: Sequence[str] = (),
                 replace: Sequence[str] = ()) -> str:
    """Apply delete -> append -> replace (K=OLD=NEW) to a kargs string."""
    new = f" {current} "
    for karg in delete:
        new = new.replace(f" {karg.strip()} ", " ")
    for karg in append:
        new += karg.strip() + " "
    for karg in replace:
        m = _REPLACE_RE.match(karg)
        if m is None:
            raise UserInputError(f"Wrong input, format should be: KEY=OLD=NEW (got {karg!r})")
        k, old, repl = m.groups()
        new = new.replace(f" {k}={old} ", f" {k}={repl} ")
    return new.strip()


def parse_area(contents: bytes, *, pad: str = "#", end: str = "\n") -> str:
    """The kargs stored in one area."""
    try:
        text = contents.decode("utf-8")
    except UnicodeDecodeError:
        raise BadImageError("invalid UTF-8 in karg area") from None
    return text.rstrip(pad).rstrip(end).strip()


def format_area(kargs: str, *, size: int, pad: str = "#", end: str = "\n") -> bytes:
    """The bytes of one area holding kargs; KargsTooLarge if they don't fit."""
    text = kargs.strip().encode("utf-8")
    if len(text) >= size:
        raise KargsTooLarge(
            f"kargs too large for area: {len(text) + 1} vs {size}",
            hint=f"the maximum kernel argument length for this ISO is {size - 1} bytes")
    body = text + end.encode("utf-8")
    return body + pad.encode("utf-8") * (size - len(body))
