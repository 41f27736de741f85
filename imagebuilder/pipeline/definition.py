"""The image definition (``IMAGE.yaml``): a typed, strictly validated model.

The model is frozen dataclasses and enums. :func:`load_definition` walks the YAML against
the dataclass fields (types from the annotations), so every section is validated the same
way: unknown keys are rejected with their path and a did-you-mean hint, wrong types name
the path and the expected type. Adding a feature (``luks:``, ``fips:``) is a new optional
dataclass field on :class:`Definition` — the loader needs no change.

Relative paths are resolved against the directory of the YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import InvalidConfigError, UserInputError

DEFAULT_SOURCE_EPOCH = 1700000000  # fixed (not "now") so a manifest is reproducible
DEFAULT_CONSOLE = ("tty0", "ttyS0,115200n8")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


class SourceType(enum.StrEnum):
    mmdebstrap = "mmdebstrap"
    directory = "directory"
    tarball = "tarball"
    oci = "oci"


class RootFs(enum.StrEnum):
    ext4 = "ext4"
    xfs = "xfs"


class Layout(enum.StrEnum):
    fcos = "fcos"


class SectorSize(enum.IntEnum):
    s512 = 512
    s4096 = 4096


class OutputFormat(enum.StrEnum):
    raw = "raw"
    qcow2 = "qcow2"
    vmdk = "vmdk"
    vhd = "vhd"
    gce = "gce"
    live_iso = "live-iso"


IMPLEMENTED_OUTPUTS = frozenset({OutputFormat.raw})


class Size(int):
    """A byte count written as ``4G``, ``512M``, ``2GiB`` or a plain integer."""

    UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    @classmethod
    def parse(cls, value: Any) -> "Size":
        if isinstance(value, bool):
            raise ValueError("expected a size like 4G")
        if isinstance(value, int):
            return cls(value)
        m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", str(value), re.IGNORECASE)
        if not m:
            raise ValueError(f"{value!r} is not a size (examples: 4G, 512M, 2GiB, 1073741824)")
        return cls(int(m.group(1)) * cls.UNITS[m.group(2).upper()])


@dataclass(frozen=True)
class MmdebstrapSource:
    """Debian root filesystem built with mmdebstrap (host apt sources unless ``mirror``)."""

    suite: str = "bookworm"
    variant: str = "minbase"
    mirror: str | None = None
    packages: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    type: typing.Literal[SourceType.mmdebstrap] = SourceType.mmdebstrap


@dataclass(frozen=True)
class DirectorySource:
    """A root filesystem directory, copied preserving everything.

    ``generator``: an executable that creates the directory (called as ``GENERATOR PATH``)
    when it does not exist yet, e.g. the tiny test OS's ``fixtures/tinyos/mktinyos``.
    """

    path: Path
    generator: Path | None = None
    type: typing.Literal[SourceType.directory] = SourceType.directory


@dataclass(frozen=True)
class TarballSource:
    """A root filesystem tarball (any compression tarfile reads), extracted safely."""

    path: Path
    type: typing.Literal[SourceType.tarball] = SourceType.tarball


@dataclass(frozen=True)
class OciSource:
    """A container image: an oci-layout directory or a docker-archive tar."""

    path: Path
    type: typing.Literal[SourceType.oci] = SourceType.oci


Source = Union[MmdebstrapSource, DirectorySource, TarballSource, OciSource]
SOURCE_CLASSES: dict[SourceType, type] = {
    SourceType.mmdebstrap: MmdebstrapSource,
    SourceType.directory: DirectorySource,
    SourceType.tarball: TarballSource,
    SourceType.oci: OciSource,
}


@dataclass(frozen=True)
class OstreeSection:
    osname: str
    ref: str
    version: str | None = None


@dataclass(frozen=True)
class DiskSection:
    size: Size = Size(4 << 30)
    sector_size: SectorSize = SectorSize.s512
    root_fs: RootFs = RootFs.ext4
    layout: Layout = Layout.fcos


@dataclass(frozen=True)
class IgnitionSection:
    """Ignition in the image (issue 5 plugs the config embedding in here)."""

    config: Path | None = None
    platform: str = "metal"
    firstboot: bool = True


@dataclass(frozen=True)
class Definition:
    name: str
    source: Source
    ostree: OstreeSection
    seed: str | None = None  # defaults to name; the source of every GUID/UUID in the image
    source_epoch: int = DEFAULT_SOURCE_EPOCH
    kernel_args: tuple[str, ...] = ()
    console: tuple[str, ...] = DEFAULT_CONSOLE
    disk: DiskSection = field(default_factory=DiskSection)
    outputs: tuple[OutputFormat, ...] = (OutputFormat.raw,)
    ignition: IgnitionSection | None = None
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    @property
    def effective_seed(self) -> str:
        return self.seed if self.seed is not None else self.name


# --------------------------------------------------------------------------- loader


def _type_name(tp: Any) -> str:
    if tp is Size:
        return "size (e.g. 4G)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, msg: str, hint: str | None = None) -> typing.NoReturn:
    raise InvalidConfigError(f"{path or '(top level)'}: {msg}", hint=hint)


def _convert(tp: Any, value: Any, path: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, path, base)
        raise AssertionError(f"ambiguous union at {path}")
    if origin is typing.Literal:
        (lit,) = typing.get_args(tp)
        if value != lit:
            _fail(path, f"expected {lit!r}")
        return lit
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            _fail(path, f"expected a list of {_type_name(item_tp)}, got {type(value).__name__}")
        return tuple(_convert(item_tp, v, f"{path}[{i}]", base) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _load_dataclass(tp, value, path, base)
    if tp is Size:
        try:
            return Size.parse(value)
        except ValueError as e:
            _fail(path, str(e))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            hint = did_you_mean(str(value), [str(m.value) for m in tp])
            _fail(path, f"{value!r} is not {_type_name(tp)}", hint)
    if tp is Path:
        if not isinstance(value, str) or not value:
            _fail(path, "expected a path (string)")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `version: 39` as a number
        if not isinstance(value, str):
            _fail(path, f"expected a string, got {type(value).__name__}")
        return value
    raise AssertionError(f"unsupported type {tp!r} at {path}")


def _load_dataclass(cls: type, data: Any, path: str, base: Path) -> Any:
    if not isinstance(data, dict):
        _fail(path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    public = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in public:
            _fail(f"{prefix}{key}", "unknown key", did_you_mean(str(key), public))
    kwargs: dict[str, Any] = {}
    for name, f in public.items():
        tp = hints[name]
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                _fail(f"{prefix}{name}", "required key missing")
            continue
        if tp == Source:
            kwargs[name] = _load_source(data[name], f"{prefix}{name}", base)
        else:
            kwargs[name] = _convert(tp, data[name], f"{prefix}{name}", base)
    return cls(**kwargs)


def _load_source(data: Any, path: str, base: Path) -> Source:
    if not isinstance(data, dict):
        _fail(path, "expected a mapping with a 'type' key")
    if "type" not in data:
        _fail(f"{path}.type", "required key missing",
              "one of: " + ", ".join(t.value for t in SourceType))
    try:
        st = SourceType(data["type"])
    except ValueError:
        _fail(f"{path}.type", f"{data['type']!r} is not {_type_name(SourceType)}",
              did_you_mean(str(data["type"]), [t.value for t in SourceType]))
    return _load_dataclass(SOURCE_CLASSES[st], data, path, base)


def _check(d: Definition) -> None:
    """Cross-field checks the types cannot express."""
    if not NAME_RE.match(d.name):
        _fail("name", f"{d.name!r}: use letters, digits, '.', '_', '-' (max 64)")
    if d.source_epoch < 0:
        _fail("source_epoch", "must be >= 0")
    for i, arg in enumerate(d.kernel_args):
        if not arg or any(c.isspace() for c in arg):
            _fail(f"kernel_args[{i}]", f"{arg!r}: one argument per list item, no whitespace")
    for i, c in enumerate(d.console):
        if not c or any(ch.isspace() for ch in c):
            _fail(f"console[{i}]", f"{c!r}: expected a console like ttyS0,115200n8")
    for i, out in enumerate(d.outputs):
        if out not in IMPLEMENTED_OUTPUTS:
            _fail(f"outputs[{i}]", f"{out.value!r} is not yet supported",
                  "implemented: " + ", ".join(o.value for o in IMPLEMENTED_OUTPUTS))
    if not d.outputs:
        _fail("outputs", "at least one output is needed")
    if d.disk.size < (1 << 30):
        _fail("disk.size", "must be at least 1G (FCOS layout: 1M bios + 127M efi + 384M boot + root)")
    if d.disk.size % d.disk.sector_size:
        _fail("disk.size", f"must be a multiple of the sector size {int(d.disk.sector_size)}")
    src = d.source
    if isinstance(src, DirectorySource):
        if src.generator is not None:
            if not (src.generator.is_file() and os.access(src.generator, os.X_OK)):
                _fail("source.generator", f"{src.generator}: not an executable file")
        elif not src.path.is_dir():
            _fail("source.path", f"{src.path}: directory not found",
                  "create it, or name a `generator` that does")
    if isinstance(src, TarballSource) and not src.path.is_file():
        _fail("source.path", f"{src.path}: file not found")
    if isinstance(src, OciSource) and not src.path.exists():
        _fail("source.path", f"{src.path}: not found (expected an oci-layout dir or docker-archive tar)")
    if isinstance(src, MmdebstrapSource):
        for i, p in enumerate(src.packages):
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*(:[a-z0-9-]+)?", p):
                _fail(f"source.packages[{i}]", f"{p!r} is not a Debian package name")
    if d.ostree.osname and not NAME_RE.match(d.ostree.osname):
        _fail("ostree.osname", f"{d.ostree.osname!r}: use letters, digits, '.', '_', '-'")
    if d.ignition is not None:
        ign = d.ignition
        if not re.fullmatch(r"[a-z0-9_-]+", ign.platform):
            _fail("ignition.platform", f"{ign.platform!r} is not a platform id (e.g. metal, qemu)")
        if ign.config is not None:
            try:
                cfg = json.loads(ign.config.read_text())
            except OSError as e:
                _fail("ignition.config", f"{ign.config}: {e.strerror or e}")
            except json.JSONDecodeError as e:
                _fail("ignition.config", f"{ign.config}: not JSON: {e}")
            if not isinstance(cfg, dict) or not isinstance(cfg.get("ignition"), dict) \
                    or "version" not in cfg["ignition"]:
                _fail("ignition.config", f"{ign.config}: not an Ignition config (no ignition.version)")


def parse_definition(data: Any, base_dir: Path) -> Definition:
    d = _load_dataclass(Definition, data, "", base_dir)
    d = dataclasses.replace(d, base_dir=base_dir)
    _check(d)
    return d


def load_definition(path: str | Path) -> Definition:
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserInputError(f"{p}: image definition not found") from None
    except OSError as e:
        raise UserInputError(f"{p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidConfigError(f"{p}: not valid YAML: {e}") from None
    try:
        return parse_definition(data, p.resolve().parent)
    except InvalidConfigError as e:
        raise InvalidConfigError(f"{p}: {e.message}", hint=e.hint) from None
