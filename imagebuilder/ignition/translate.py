"""Reading the version of an Ignition config and translating it to a newer spec.

Ignition itself parses any 3.x config by chaining translators 3.0 → 3.1 → … →
latest. In JSON terms each step only rewrites ``ignition.version``, except
3.5 → 3.6, which clears setuid/setgid/sticky bits from file and directory modes
(they were not functional before 3.6.0). Like Ignition's translators, which go
through typed structs, keys the source version does not know and ``null``
values are dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import InvalidConfigError
from . import spec
from .parse import JSONSyntaxError, parse_json
from .spec import SpecVersion


def read_version(config: Any) -> SpecVersion:
    """The spec version of a decoded config; InvalidConfigError if missing, 2.x or unknown."""
    if not isinstance(config, dict):
        raise InvalidConfigError("not an Ignition config: the top level must be a JSON object")
    ign = config.get("ignition")
    raw = ign.get("version") if isinstance(ign, dict) else None
    if not isinstance(raw, str):
        raise InvalidConfigError("invalid config version (couldn't parse): ignition.version is missing")
    return version_from_string(raw)


def version_from_string(raw: str) -> SpecVersion:
    """Parse ``ignition.version``; errors use Ignition's wording plus a hint."""
    try:
        version = SpecVersion.parse(raw)
    except ValueError:
        m = spec._SEMVER.fullmatch(raw)
        if m is None:
            raise InvalidConfigError(f"invalid config version (couldn't parse): {raw!r}") from None
        raise InvalidConfigError(
            f"unsupported config version {raw}: pre-release specs are not accepted "
            f"(supported: {spec.V3_0}–{spec.LATEST})") from None
    if version.major < 3:
        raise InvalidConfigError(
            f"unsupported config version {raw}: Ignition spec 2.x configs are not supported "
            f"(supported: {spec.V3_0}–{spec.LATEST})",
            hint="convert it to spec 3 first, e.g. with ign-converter, or rewrite it in Butane")
    if not spec.is_supported(version):
        raise InvalidConfigError(
            f"unsupported config version {raw} (supported: {spec.V3_0}–{spec.LATEST})")
    return version


def parse_config(data: bytes) -> tuple[SpecVersion, dict]:
    """Decode an Ignition config: returns (spec version, config dict).

    Raises InvalidConfigError for malformed JSON (with line and column), a
    missing or unparsable version, and 2.x or otherwise unsupported versions.
    It does not validate the config; see :func:`imagebuilder.ignition.validate.ensure_valid`.
    """
    if not data.strip():
        raise InvalidConfigError("not a config (empty)")
    try:
        doc = parse_json(data)
    except JSONSyntaxError as e:
        raise InvalidConfigError(f"config is not valid JSON: {e.message} at line {e.line} col {e.column}") from None
    version = read_version(doc.value)
    return version, doc.value


_MISTYPED = object()


def prune(value: Any, type_: spec.TypeSpec, version: SpecVersion, *, well_typed: bool = False) -> Any:
    """Copy value keeping only the keys the schema knows at version, without nulls.

    With ``well_typed``, values of the wrong type are dropped too (for reading a config
    that failed validation, e.g. to show it anyway).
    """
    if isinstance(type_, spec.ObjectSpec) and isinstance(value, dict):
        known = type_.fields_for(version)
        out = {}
        for k, v in value.items():
            f = known.get(k)
            if f is None or v is None:
                continue
            got = prune(v, f.type, version, well_typed=well_typed)
            if got is not _MISTYPED:
                out[k] = got
        return out
    if isinstance(type_, spec.ListOf) and isinstance(value, list):
        items = (prune(v, type_.item, version, well_typed=well_typed) for v in value if v is not None)
        return [v for v in items if v is not _MISTYPED]
    if well_typed and not _has_type(value, type_):
        return _MISTYPED
    if isinstance(value, (dict, list)):  # a container where the schema has a scalar (type error)
        return copy.deepcopy(value)
    return value


def _has_type(value: Any, type_: spec.TypeSpec) -> bool:
    if isinstance(type_, spec.Scalar):
        if type_ is spec.Scalar.STRING:
            return isinstance(value, str)
        if type_ is spec.Scalar.BOOL:
            return isinstance(value, bool)
        return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < (1 << 63)
    return isinstance(value, list if isinstance(type_, spec.ListOf) else dict)


def _mask_special_bits(config: dict) -> None:
    storage = config.get("storage")
    if not isinstance(storage, dict):
        return
    for kind in ("files", "directories"):
        for node in storage.get(kind) or []:
            if isinstance(node, dict) and isinstance(node.get("mode"), int) and not isinstance(node["mode"], bool):
                node["mode"] &= ~0o7000


def translate(config: dict, to: SpecVersion | str = spec.LATEST) -> dict:
    """Translate a decoded 3.x config to spec version ``to`` (default: the latest, 3.6.0).

    Returns a new dict; the input is not modified. Downgrades are refused.
    """
    target = version_from_string(to) if isinstance(to, str) else to
    if not spec.is_supported(target):
        raise InvalidConfigError(f"cannot translate to unsupported spec version {target}")
    source = read_version(config)
    if target < source:
        raise InvalidConfigError(
            f"cannot translate a {source} config down to {target}: translation only goes to newer specs")
    out = prune(config, spec.CONFIG, source)
    for step in spec.SUPPORTED_VERSIONS:
        if source < step <= target:
            if step == spec.SPECIAL_MODE_BITS_SINCE:
                _mask_special_bits(out)
    out.setdefault("ignition", {})["version"] = str(target)
    return out


def translate_bytes(data: bytes, to: SpecVersion | str = spec.LATEST) -> dict:
    """parse_config() then translate()."""
    _version, config = parse_config(data)
    return translate(config, to)
