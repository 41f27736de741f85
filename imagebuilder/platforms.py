"""The platform table (``imagebuilder/data/platforms.yaml``): per platform its Ignition
platform id, console kernel arguments, GRUB terminal, default artifact format and disk
rules. Loaded once, validated strictly (unknown keys, types, formats, compression and
format options are errors naming the key's path)."""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidConfigError
from .kargs import Karg, KargError
from .run import data_path

GRUB_TERMINALS = ("serial", "console")
SECTOR_SIZES = (512, 4096)
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_KARG_KEY_RE = re.compile(r"^[A-Za-z_]")  # a bare "115200n8" is a console= split at its comma
_KEYS = {"ignition_id", "kernel_arguments", "grub_terminal", "serial_unit", "serial_speed", "format",
         "format_options", "compress", "disk"}
_DISK_KEYS = {"sector_size", "size_multiple"}


@dataclass(frozen=True)
class Platform:
    name: str
    ignition_id: str
    format: str
    kernel_arguments: tuple[str, ...] = ()
    grub_terminal: tuple[str, ...] = ("console",)
    serial_unit: int = 0
    serial_speed: int = 115200
    format_options: dict = field(default_factory=dict)
    compress: str = "none"
    sector_size: int = 512
    size_multiple: int = 512

    @property
    def consoles(self) -> tuple[str, ...]:
        """The console= values (``tty0``, ``ttyS0,115200n8``) in order, as the definition's
        ``console:`` list spells them."""
        return tuple(k.split("=", 1)[1] for k in self.kernel_arguments if k.startswith("console="))

    @property
    def platform_karg(self) -> str:
        return f"ignition.platform.id={self.ignition_id}"

    def grub_commands(self) -> list[str]:
        """GRUB's terminal set-up for this platform (empty: GRUB's default console)."""
        if "serial" not in self.grub_terminal:
            return []
        unit = f" --unit={self.serial_unit}" if self.serial_unit else ""
        terms = " ".join("serial" if t == "serial" else "console" for t in self.grub_terminal)
        return [f"serial{unit} --speed={self.serial_speed}", f"terminal_input {terms}",
                f"terminal_output {terms}"]


def _fail(path: str, msg: str, hint: str | None = None):
    raise InvalidConfigError(f"{path}: {msg}", hint=hint)


def _size(value, path: str) -> int:
    from .disk.layout import parse_size
    from .errors import UserInputError

    if isinstance(value, bool):
        _fail(path, "expected a size (bytes, or 1M, 1G)")
    try:
        return parse_size(value)
    except UserInputError as e:
        _fail(path, e.message)


def parse_platforms(doc, source: str = "platforms.yaml") -> dict[str, Platform]:
    """Validate the table (as loaded from YAML) and return ``{name: Platform}``."""
    from .formats import FORMATS, _options, compress

    if not isinstance(doc, dict) or set(doc) - {"version", "platforms"}:
        _fail(source, "expected a mapping with 'version' and 'platforms'")
    if doc.get("version") != 1:
        _fail(f"{source}: version", f"{doc.get('version')!r} is not a supported table version (1)")
    table = doc.get("platforms")
    if not isinstance(table, dict) or not table:
        _fail(f"{source}: platforms", "expected a non-empty mapping of platform names")
    out: dict[str, Platform] = {}
    for name, entry in table.items():
        where = f"{source}: platforms.{name}"
        if not isinstance(name, str) or not _ID_RE.match(name):
            _fail(where, "platform names are lower-case letters, digits, - and _")
        if not isinstance(entry, dict):
            _fail(where, "expected a mapping")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            _fail(f"{where}.{unknown[0]}", "unknown key", hint=f"known keys: {', '.join(sorted(_KEYS))}")
        for req in ("ignition_id", "format"):
            if req not in entry:
                _fail(f"{where}.{req}", "missing")
        ign = entry["ignition_id"]
        if not isinstance(ign, str) or not _ID_RE.match(ign):
            _fail(f"{where}.ignition_id", f"{ign!r} is not a platform id")
        fmt = entry["format"]
        if fmt not in FORMATS:
            _fail(f"{where}.format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
        kargs = entry.get("kernel_arguments", [])
        if not isinstance(kargs, list):
            _fail(f"{where}.kernel_arguments", "expected a list")
        for i, k in enumerate(kargs):
            if not isinstance(k, str) or not _KARG_KEY_RE.match(k):
                _fail(f"{where}.kernel_arguments[{i}]", f"{k!r} is not a kernel argument",
                      hint="quote console=ttyS0,115200n8: in a YAML [flow] list its comma splits it")
            try:
                Karg.parse(k)
            except KargError as e:
                _fail(f"{where}.kernel_arguments[{i}]", e.message, hint=e.hint)
        terms = entry.get("grub_terminal", ["console"])
        if (not isinstance(terms, list) or not terms or len(set(terms)) != len(terms)
                or any(t not in GRUB_TERMINALS for t in terms)):
            _fail(f"{where}.grub_terminal", f"{terms!r}: a list of {', '.join(GRUB_TERMINALS)}")
        ints = {}
        for key, default, lo, hi in (("serial_unit", 0, 0, 3), ("serial_speed", 115200, 1200, 4000000)):
            v = entry.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                _fail(f"{where}.{key}", f"{v!r} is not an integer in {lo}..{hi}")
            ints[key] = v
        opts = entry.get("format_options", {})
        if not isinstance(opts, dict):
            _fail(f"{where}.format_options", "expected a mapping")
        if fmt == "raw" and opts:
            _fail(f"{where}.format_options", "raw has no options")
        if fmt != "raw":
            try:
                if fmt == "ova":
                    from .formats.ova import OvfSettings

                    _options(fmt, OvfSettings, opts, ("name",))
                    OvfSettings(name="check", **opts).validate()
                else:
                    module = importlib.import_module(f"{__package__}.formats.{fmt}")
                    _options(fmt, module.convert, opts, ("seed", "epoch"))
            except InvalidConfigError as e:
                _fail(f"{where}.format_options", e.message)
        comp = entry.get("compress", "none")
        try:
            compress.check(fmt, comp, where=f"{where}.compress")
        except InvalidConfigError as e:
            raise InvalidConfigError(e.message, hint=e.hint) from None
        disk = entry.get("disk", {})
        if not isinstance(disk, dict):
            _fail(f"{where}.disk", "expected a mapping")
        bad = sorted(set(disk) - _DISK_KEYS)
        if bad:
            _fail(f"{where}.disk.{bad[0]}", "unknown key", hint=f"known keys: {', '.join(sorted(_DISK_KEYS))}")
        ss = disk.get("sector_size", 512)
        if ss not in SECTOR_SIZES:
            _fail(f"{where}.disk.sector_size", f"{ss!r} is not 512 or 4096")
        mult = _size(disk.get("size_multiple", ss), f"{where}.disk.size_multiple")
        if mult % ss:
            _fail(f"{where}.disk.size_multiple", f"{mult} is not a multiple of the sector size {ss}")
        out[name] = Platform(name, ign, fmt, tuple(kargs), tuple(terms), ints["serial_unit"],
                             ints["serial_speed"], dict(opts), comp, ss, mult)
    return out


def load_platforms(path: str | Path | None = None) -> dict[str, Platform]:
    """The table at ``path`` (default: the bundled one, read once per process)."""
    if path is None:
        return _bundled()
    return _load(Path(path))


@functools.cache
def _bundled() -> dict[str, Platform]:
    return _load(data_path("platforms.yaml"))


def _load(path: Path) -> dict[str, Platform]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidConfigError(f"{path}: platform table not found") from None
    except yaml.YAMLError as e:
        raise InvalidConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_platforms(doc, source=path.name)


def get_platform(name: str, where: str = "platforms") -> Platform:
    """The named platform, or an error listing the known ones."""
    table = load_platforms()
    if name in table:
        return table[name]
    from .pipeline.definition import did_you_mean

    raise InvalidConfigError(f"{where}: unknown platform {name!r} (known: {', '.join(table)})",
                             hint=did_you_mean(str(name), table))


def check_size(platform: Platform, size: int, where: str = "disk.size") -> None:
    """Refuse a disk size the platform cannot take."""
    if size % platform.size_multiple:
        from .formats.common import human

        raise InvalidConfigError(f"{where}: {size} bytes is not a multiple of {human(platform.size_multiple)}, "
                                 f"as platform {platform.name} requires")
