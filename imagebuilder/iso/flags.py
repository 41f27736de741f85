"""The ``iso customize`` / ``pxe customize`` flags, declared once.

:data:`CUSTOMIZE_FLAGS` is the table every front end is made from: the command-line
options and their help (:mod:`imagebuilder.cli.iso`, :mod:`imagebuilder.cli.pxe`) and the
fields of :class:`Customizations`. Adding a flag is one row here plus what it does in
:func:`imagebuilder.iso.customize.plan`. This module stays light (it is imported on every
``iso`` command line).
"""

from __future__ import annotations

import re

from ..errors import UserInputError
from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SERIAL_CONSOLE = re.compile(
    r"^(?P<prefix>ttyS|ttyAMA)(?P<port>[0-9]+)"
    r"(?:,(?P<speed>[0-9]+)(?:(?P<parity>[noe])(?P<bits>[5-8])?)?)?$")
_GRAPHICAL_CONSOLES = ("tty0", "hvc0", "ttysclp0")


class Flag(Record):
    """One customize flag: ``--option METAVAR`` (repeatable unless ``repeat=False``)."""

    option: str
    metavar: str
    help: str
    repeat: bool = True
    iso_only: bool = False  # the live kargs: only an ISO has kargs areas

    @property
    def field(self) -> str:
        return self.option[2:].replace("-", "_")


CUSTOMIZE_FLAGS: tuple[Flag, ...] = (
    Flag("--dest-ignition", "PATH", "Ignition config for the installed system"),
    Flag("--dest-device", "DEV", "Install to this device, without confirmation", repeat=False),
    Flag("--dest-console", "SPEC", "Kernel and bootloader console of the installed system, "
                                   "e.g. ttyS0,115200n8"),
    Flag("--dest-karg-append", "ARG", "Kernel argument to add to the installed system"),
    Flag("--dest-karg-delete", "ARG", "Default kernel argument to delete from the installed "
                                      "system"),
    Flag("--network-keyfile", "PATH", "NetworkManager keyfile for the live system, copied to "
                                      "the installed one"),
    Flag("--network-nmstate", "PATH", "nmstate YAML/JSON translated to keyfiles, like "
                                      "--network-keyfile"),
    Flag("--ignition-ca", "PATH", "CA certificate (PEM) trusted by Ignition, live and "
                                  "installed"),
    Flag("--pre-install", "PATH", "Script to run before installation"),
    Flag("--post-install", "PATH", "Script to run after installation"),
    Flag("--installer-config", "PATH", "coreos-installer config file"),
    Flag("--live-ignition", "PATH", "Ignition config merged into the live system's config"),
    Flag("--live-karg-append", "ARG", "Kernel argument to add to the live system",
         iso_only=True),
    Flag("--live-karg-replace", "K=OLD=NEW", "Replace a default live kernel argument's value",
         iso_only=True),
    Flag("--live-karg-delete", "ARG", "Default live kernel argument to delete", iso_only=True),
)
_FLAGS_BY_FIELD = {f.field: f for f in CUSTOMIZE_FLAGS}


class Customizations:
    """Every ``iso customize`` / ``pxe customize`` flag (one attribute per row of
    :data:`CUSTOMIZE_FLAGS`). Repeatable flags are tuples, in command-line order; file
    flags hold paths. Immutable and hashable."""

    __slots__ = tuple(_FLAGS_BY_FIELD)

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(_FLAGS_BY_FIELD)
        if unknown:
            raise TypeError(f"unknown customization(s): {', '.join(sorted(unknown))}")
        for name, flag in _FLAGS_BY_FIELD.items():
            v = values.get(name)
            object.__setattr__(self, name, tuple(v or ()) if flag.repeat else v)
        for spec in self.live_karg_replace:
            if not re.fullmatch(r"[^=]+=[^=]+=[^=]+", spec):
                raise UserInputError(
                    f"--live-karg-replace {spec!r}: expected KARG=OLDVAL=NEWVAL")
        for console in self.dest_console:
            normalize_console(console)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Customizations are immutable (setting {name!r})")

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Customizations) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        set_ = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n))
        return f"Customizations({set_})"

    @property
    def has_live_kargs(self) -> bool:
        return bool(self.live_karg_append or self.live_karg_replace or self.live_karg_delete)

    @property
    def has_initrd_changes(self) -> bool:
        """Anything besides live kargs (i.e. something for the initrd / Ignition area)."""
        return any(getattr(self, f.field) for f in CUSTOMIZE_FLAGS if not f.iso_only)

    @property
    def is_empty(self) -> bool:
        return not self.has_live_kargs and not self.has_initrd_changes


def normalize_console(spec: str) -> str:
    """coreos-installer's console syntax, normalized as it serializes it (ttyS0 -> ttyS0,9600n8)."""
    for prefix in ("console=", "/dev/"):
        if spec.startswith(prefix):
            raise UserInputError(f"--dest-console {spec!r}: spec should not start with {prefix!r}")
    m = _SERIAL_CONSOLE.match(spec)
    if m:
        port = int(m["port"])
        speed = int(m["speed"] or 9600)
        if port > 255 or speed > 2**32 - 1:
            raise UserInputError(f"--dest-console {spec!r}: port or speed out of range")
        return f"{m['prefix']}{port},{speed}{m['parity'] or 'n'}{m['bits'] or 8}"
    if spec in _GRAPHICAL_CONSOLES:
        return spec
    raise UserInputError(f"--dest-console {spec!r}: invalid or unsupported console argument",
                         hint="use e.g. ttyS0,115200n8, ttyAMA0, tty0, hvc0 or ttysclp0")


