"""Butane variants, versions and the schema of each version.

A Butane config of variant ``fcos`` version 1.x is the Ignition spec its version
maps to (:data:`FCOS_IGNITION`), with snake_case keys, plus sugar fields. The
schema here is derived from the Ignition spec model (:mod:`imagebuilder.ignition.spec`)
so the two never drift: every Ignition field becomes a Butane field from the fcos
version whose Ignition spec introduced it, and :data:`SUGAR` adds Butane's own
fields with the fcos version that introduced each. ``openshift`` 4.x configs are
the fcos config of the version they build on plus ``metadata`` and ``openshift``.

:func:`decode` reads a YAML node tree against that schema the way go-yaml v3
decodes into Butane's Go structs: a scalar becomes a string whatever it looks like,
booleans and integers must look like one (``0644`` is octal, ``yes``/``no`` are
booleans), ``null`` leaves a field unset. Type errors stop translation; keys the
version does not have are warnings (``unused key``), with a hint when a later
version has them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from ..ignition import spec
from ..ignition.spec import SpecVersion
from .yamlnode import MAP, SCALAR, SEQ, STR_TAG, Node

YamlPath = tuple[str | int, ...]

# --------------------------------------------------------------------------- versions

V1_0, V1_1, V1_2, V1_3, V1_4, V1_5, V1_6, V1_7, V1_8 = (SpecVersion(1, m, 0) for m in range(9))

FCOS_IGNITION: dict[SpecVersion, SpecVersion] = {
    V1_0: spec.V3_0, V1_1: spec.V3_1, V1_2: spec.V3_2, V1_3: spec.V3_2, V1_4: spec.V3_3,
    V1_5: spec.V3_4, V1_6: spec.V3_5, V1_7: spec.V3_6,
}
# the fcos version whose Ignition spec first has a given Ignition field
_FCOS_FOR_IGNITION = {spec.V3_0: V1_0, spec.V3_1: V1_1, spec.V3_2: V1_2, spec.V3_3: V1_4,
                      spec.V3_4: V1_5, spec.V3_5: V1_6, spec.V3_6: V1_7}
EXPERIMENTAL = "1.8.0-experimental"
EXPERIMENTAL_IGNITION = "3.7.0-experimental"

# openshift 4.x builds on an fcos version (and emits that version's Ignition spec)
OPENSHIFT_MIN, OPENSHIFT_MAX = 8, 22


def openshift_base(minor: int) -> SpecVersion:
    if minor <= 13:
        return V1_3
    if minor <= 18:
        return V1_5
    return V1_6


@dataclass(frozen=True)
class Target:
    """What one ``variant``/``version`` pair means."""

    variant: str  # "fcos" or "openshift"
    version: str  # as written, e.g. "1.5.0" or "4.14.0"
    fcos: SpecVersion  # the fcos version whose schema and sugar apply
    ignition: str  # the Ignition spec version of the output
    openshift_minor: int | None = None
    experimental: bool = False

    @property
    def ignition_spec(self) -> SpecVersion:
        """The spec the output is validated against (3.7.0-experimental: as 3.6.0)."""
        return FCOS_IGNITION.get(self.fcos, spec.V3_6)


def supported_versions() -> str:
    return (f"fcos 1.0.0 - 1.7.0 ({EXPERIMENTAL} with --experimental), "
            f"openshift 4.{OPENSHIFT_MIN}.0 - 4.{OPENSHIFT_MAX}.0")


class TargetError(ValueError):
    pass


def resolve_target(variant: str, version: str, *, experimental: bool = False) -> Target:
    """Map ``variant``/``version`` to a :class:`Target`; TargetError with Butane's wording."""
    if not variant:
        raise TargetError("error parsing variant; must be specified")
    m = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?",
                     version or "")
    if m is None:
        raise TargetError("error parsing version; must be a valid semver")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
    pre = m.group(4)
    if variant == "rhcos":
        raise TargetError("rhcos variant has been removed; use openshift variant instead")
    unknown = TargetError(f"no translator exists for variant {variant} with version {version} "
                          f"(supported: {supported_versions()})")
    if variant == "fcos":
        if version == EXPERIMENTAL:
            if not experimental:
                raise TargetError(f"fcos {EXPERIMENTAL} is experimental and may change without "
                                  "notice; pass --experimental to use it")
            return Target("fcos", version, V1_7, EXPERIMENTAL_IGNITION, experimental=True)
        v = SpecVersion(major, minor, patch)
        if pre or v not in FCOS_IGNITION:
            raise unknown
        return Target("fcos", version, v, str(FCOS_IGNITION[v]))
    if variant == "openshift":
        if pre or major != 4 or patch != 0 or not OPENSHIFT_MIN <= minor <= OPENSHIFT_MAX:
            raise unknown
        base = openshift_base(minor)
        return Target("openshift", version, base, str(FCOS_IGNITION[base]), openshift_minor=minor)
    raise TargetError(f"variant {variant!r} is not supported (supported: {supported_versions()})")


# --------------------------------------------------------------------------- schema types


class Kind:
    STR, INT, BOOL = "string", "int", "bool"


@dataclass(frozen=True)
class ListT:
    item: Any


@dataclass(frozen=True)
class MapT:
    """A mapping of free-form string keys to strings (metadata.labels)."""


@dataclass(frozen=True)
class BField:
    name: str  # the YAML key
    type: Any  # Kind.*, ListT, MapT or BObject
    since: SpecVersion  # fcos version
    json: str | None = None  # the Ignition key; None for Butane-only (sugar) fields


@dataclass(frozen=True)
class BObject:
    name: str
    fields: tuple[BField, ...]
    ign: spec.ObjectSpec | None = None
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def fields_for(self, version: SpecVersion) -> dict[str, BField]:
        got = self._cache.get(version)
        if got is None:
            got = self._cache[version] = {f.name: f for f in self.fields if f.since <= version}
        return got

    def field(self, name: str) -> BField | None:
        return next((f for f in self.fields if f.name == name), None)


_SNAKE = re.compile(r"(MiB|[A-Z])")


def snake(name: str) -> str:
    """``sizeMiB`` -> ``size_mib``, ``httpHeaders`` -> ``http_headers`` (Butane's rule)."""
    return _SNAKE.sub(r"_\1", name).lower()


S, I, B = Kind.STR, Kind.INT, Kind.BOOL


def _f(name: str, type_: Any, since: SpecVersion = V1_0) -> BField:
    return BField(name, type_, since)


# Butane's own fields, per Ignition object type, with the fcos version that added them.
_TREE_FIELDS = (_f("local", S, V1_1), _f("path", S, V1_1))
SUGAR_FIELDS: dict[str, tuple[BField, ...]] = {
    "FileResource": (_f("inline", S, V1_0), _f("local", S, V1_1)),
    "Resource": (_f("inline", S, V1_1), _f("local", S, V1_1)),
    "Filesystem": (_f("with_mount_unit", B, V1_1),),
    "Unit": (_f("contents_local", S, V1_5),),
    "Dropin": (_f("contents_local", S, V1_5),),
    "PasswdUser": (_f("ssh_authorized_keys_local", ListT(S), V1_5),),
}


def _owner() -> BObject:
    return _from_ignition(spec.OWNER)


def _tree() -> BObject:
    return BObject("Tree", (*_TREE_FIELDS, _f("group", _owner(), V1_7), _f("user", _owner(), V1_7),
                            _f("file_mode", I, V1_7), _f("dir_mode", I, V1_7)))


def _convert(t: Any) -> Any:
    if isinstance(t, spec.Scalar):
        return {spec.Scalar.STRING: S, spec.Scalar.INT: I, spec.Scalar.BOOL: B}[t]
    if isinstance(t, spec.ListOf):
        return ListT(_convert(t.item))
    return _from_ignition(t)


@functools.cache
def _from_ignition(o: spec.ObjectSpec) -> BObject:
    fields = [BField(snake(f.name), _convert(f.type), _FCOS_FOR_IGNITION[f.since], f.name)
              for f in o.fields if not (o is spec.IGNITION and f.name == "version")]
    fields += SUGAR_FIELDS.get(o.name, ())
    if o is spec.STORAGE:
        fields.append(_f("trees", ListT(_tree()), V1_1))
    return BObject(o.name, tuple(fields), o)


def _boot_device() -> BObject:
    tang = _from_ignition(spec.TANG)
    luks = BObject("BootDeviceLuks", (
        _f("tang", ListT(tang), V1_3), _f("threshold", I, V1_3), _f("tpm2", B, V1_3),
        _f("discard", B, V1_5), _f("cex", _from_ignition(spec.CEX), V1_6), _f("device", S, V1_6)))
    mirror = BObject("BootDeviceMirror", (_f("devices", ListT(S), V1_3),))
    return BObject("BootDevice", (_f("layout", S, V1_3), _f("luks", luks, V1_3),
                                  _f("mirror", mirror, V1_3)))


def _grub() -> BObject:
    user = BObject("GrubUser", (_f("name", S, V1_5), _f("password_hash", S, V1_5)))
    return BObject("Grub", (_f("users", ListT(user), V1_5),))


def _quadlets() -> BField:
    dropin = BObject("QuadletDropin", (_f("name", S), _f("contents", S), _f("contents_local", S)))
    quadlet = BObject("Quadlet", (_f("name", S), _f("rootful", B), _f("contents", S),
                                  _f("contents_local", S), _f("dropins", ListT(dropin))))
    return _f("quadlets", ListT(quadlet))


@functools.cache
def config_schema(variant: str, experimental: bool = False) -> BObject:
    """The root object of a Butane config of ``variant`` (fields gated per fcos version)."""
    base = _from_ignition(spec.CONFIG)
    fields = [_f("variant", S), _f("version", S), *base.fields,
              _f("boot_device", _boot_device(), V1_3), _f("grub", _grub(), V1_5)]
    if experimental:  # systemd.quadlets (fcos 1.8.0-experimental)
        fields = [f if f.name != "systemd" else BField("systemd", BObject(
            "Systemd", (*f.type.fields, _quadlets()), f.type.ign), f.since, f.json) for f in fields]
    if variant == "openshift":
        metadata = BObject("Metadata", (_f("name", S), _f("labels", MapT())))
        openshift = BObject("OpenShift", (_f("kernel_arguments", ListT(S)), _f("extensions", ListT(S)),
                                          _f("fips", B), _f("kernel_type", S)))
        fields += [_f("metadata", metadata), _f("openshift", openshift)]
    return BObject("Config", tuple(fields), spec.CONFIG)


# --------------------------------------------------------------------------- decoding


@dataclass
class Issue:
    severity: str  # "error" or "warning"
    path: YamlPath
    message: str
    at_key: bool = False  # locate at the key (unused keys), not the value


_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_TRUE = {"true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_FALSE = {"false", "False", "FALSE", "n", "N", "no", "No", "NO", "off", "Off", "OFF"}
_INT64 = 1 << 63


def _to_int(node: Node) -> int | None:
    """A plain scalar as go-yaml resolves it for an int field (0644 and 0o644 are octal)."""
    if not node.plain or (node.tag not in (None, "tag:yaml.org,2002:int")):
        return None
    text = node.value.replace("_", "")
    if len(text) > 80:
        return None
    if _GO_INT.fullmatch(text):
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        if body[:2] in ("0x", "0X"):
            n = int(body[2:], 16)
        elif body[:2] in ("0o", "0O"):
            n = int(body[2:], 8)
        elif body[:2] in ("0b", "0B"):
            n = int(body[2:], 2)
        elif len(body) > 1 and body.startswith("0"):
            n = int(body[1:], 8)
        else:
            n = int(body)
        n *= sign
    elif _GO_FLOAT.fullmatch(text):
        f = float(text)
        if not f.is_integer():
            return None
        n = int(f)
    else:
        return None
    return n if -_INT64 <= n < _INT64 else None


class Decoder:
    """Decode a node tree against the schema for one fcos version; collect issues."""

    def __init__(self, version: SpecVersion, variant: str):
        self.version = version
        self.variant = variant
        self.issues: list[Issue] = []

    def error(self, path: YamlPath, message: str) -> None:
        self.issues.append(Issue("error", path, message))

    def type_error(self, node: Node, path: YamlPath, target: str) -> None:
        self.error(path, f"cannot unmarshal {node.describe()} into {target}")

    def decode(self, node: Node | None, type_: Any, path: YamlPath = ()) -> Any:
        if node is None or node.is_null:
            return None
        if type_ == S:
            if node.kind != SCALAR:
                self.type_error(node, path, "string")
                return None
            if node.tag not in (None, STR_TAG) and not node.tag.startswith("tag:yaml.org,2002:"):
                self.error(path, f"unsupported YAML tag {node.tag}")
                return None
            if node.tag == "tag:yaml.org,2002:binary":
                import base64
                import binascii

                try:
                    return base64.b64decode("".join(node.value.split()), validate=True).decode(
                        "utf-8", "replace")
                except (binascii.Error, ValueError):
                    self.error(path, "!!binary value is not valid base64")
                    return None
            return node.value
        if type_ == I:
            n = _to_int(node) if node.kind == SCALAR else None
            if n is None:
                self.type_error(node, path, "int")
            return n
        if type_ == B:
            if node.kind == SCALAR and node.plain and node.tag in (None, "tag:yaml.org,2002:bool"):
                if node.value in _TRUE:
                    return True
                if node.value in _FALSE:
                    return False
            self.type_error(node, path, "bool")
            return None
        if isinstance(type_, ListT):
            if node.kind != SEQ:
                self.type_error(node, path, "list")
                return None
            out = []
            for i, item in enumerate(node.items):  # a null entry is the zero value, as in Go
                value = self.decode(item, type_.item, (*path, i))
                if value is None and item.is_null:
                    value = {} if isinstance(type_.item, BObject) else ("" if type_.item == S else None)
                out.append(value)
            return out
        if isinstance(type_, MapT):
            if node.kind != MAP:
                self.type_error(node, path, "map")
                return None
            out = {}
            for k, v in node.pairs:
                key = self.decode(k, S, path)
                if key is not None:
                    out[key] = self.decode(v, S, (*path, key)) or ""
            return out
        return self.decode_object(node, type_, path)

    def decode_object(self, node: Node, obj: BObject, path: YamlPath) -> dict | None:
        if node.kind != MAP:
            self.type_error(node, path, "object")
            return None
        known = obj.fields_for(self.version)
        out: dict[str, Any] = {}
        for k, v in node.pairs:
            if k.kind != SCALAR:
                self.error(path, f"cannot unmarshal {k.describe()} into a mapping key")
                continue
            f = known.get(k.value)
            if f is None:
                later = obj.field(k.value)
                hint = ""
                if later is not None:
                    hint = f" (needs {self.variant_for(later.since)} or newer)"
                self.issues.append(Issue("warning", (*path, k.value), f"unused key {k.value}{hint}", True))
                continue
            value = self.decode(v, f.type, (*path, k.value))
            if value is not None:
                out[k.value] = value
        return out

    def variant_for(self, fcos: SpecVersion) -> str:
        if self.variant == "openshift":
            minor = {V1_5: 14, V1_6: 19}.get(fcos)
            return f"openshift 4.{minor}.0" if minor else f"a later openshift version (fcos {fcos})"
        return f"fcos {fcos}"
