"""The Ignition config spec 3.0.0 … 3.6.0 as data.

The schema is table driven: every object is an :class:`ObjectSpec` listing its
fields, each with a type and the spec version that introduced it.
``ObjectSpec.fields_for(version)`` gives the keys that exist in one version; a
key outside that set is an *unused key* (Ignition warns about it and ignores
it). Enumerations (filesystem formats, compressions, hash functions, URL
schemes, RAID levels, unit types, clevis pins) are ``StrEnum`` classes with a
per-version ``allowed()`` helper.

Field order inside each object follows Ignition's Go structs (alphabetical by
Go field name, embedded ``Node`` fields first), because the validator walks in
that order and the first reported error should be the one Ignition reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import NamedTuple


class SpecVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> SpecVersion:
        """Parse a stable ``X.Y.Z`` version; ValueError for anything else (incl. pre-releases)."""
        m = _SEMVER.fullmatch(text)
        if not m:
            raise ValueError(f"not a semantic version: {text!r}")
        if m.group(4):
            raise ValueError(f"pre-release versions are not supported: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))


_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")

V3_0 = SpecVersion(3, 0, 0)
V3_1 = SpecVersion(3, 1, 0)
V3_2 = SpecVersion(3, 2, 0)
V3_3 = SpecVersion(3, 3, 0)
V3_4 = SpecVersion(3, 4, 0)
V3_5 = SpecVersion(3, 5, 0)
V3_6 = SpecVersion(3, 6, 0)

SUPPORTED_VERSIONS: tuple[SpecVersion, ...] = (V3_0, V3_1, V3_2, V3_3, V3_4, V3_5, V3_6)
LATEST = V3_6


def is_supported(v: SpecVersion) -> bool:
    return v in SUPPORTED_VERSIONS


# --------------------------------------------------------------------------- enums


_ALLOWED_CACHE: dict[tuple[str, SpecVersion], tuple[str, ...]] = {}


class _Versioned(StrEnum):
    """A StrEnum whose members may have been introduced in a later spec version."""

    @classmethod
    def _since(cls) -> dict[str, SpecVersion]:
        return {}

    @classmethod
    def allowed(cls, version: SpecVersion) -> tuple[str, ...]:
        key = (cls.__name__, version)
        got = _ALLOWED_CACHE.get(key)
        if got is None:
            since = cls._since()
            got = _ALLOWED_CACHE[key] = tuple(m.value for m in cls if since.get(m.value, V3_0) <= version)
        return got


class FilesystemFormat(_Versioned):
    EXT4 = "ext4"
    BTRFS = "btrfs"
    XFS = "xfs"
    VFAT = "vfat"
    SWAP = "swap"
    NONE = "none"

    @classmethod
    def _since(cls) -> dict[str, SpecVersion]:
        return {"none": V3_3}


# Maximum filesystem label length per format (mkfs limits Ignition enforces).
FILESYSTEM_LABEL_MAX: dict[str, int] = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}


class Compression(_Versioned):
    GZIP = "gzip"


class HashFunction(_Versioned):
    SHA512 = "sha512"
    SHA256 = "sha256"

    @classmethod
    def _since(cls) -> dict[str, SpecVersion]:
        return {"sha256": V3_1}

    @property
    def hex_length(self) -> int:
        return {"sha512": 128, "sha256": 64}[self.value]


class UrlScheme(_Versioned):
    HTTP = "http"
    HTTPS = "https"
    TFTP = "tftp"
    S3 = "s3"
    ARN = "arn"
    GS = "gs"
    DATA = "data"

    @classmethod
    def _since(cls) -> dict[str, SpecVersion]:
        return {"gs": V3_2, "arn": V3_4}


class RaidLevel(_Versioned):
    LINEAR = "linear"
    RAID0 = "raid0"
    ZERO = "0"
    STRIPE = "stripe"
    RAID1 = "raid1"
    ONE = "1"
    MIRROR = "mirror"
    RAID4 = "raid4"
    FOUR = "4"
    RAID5 = "raid5"
    FIVE = "5"
    RAID6 = "raid6"
    SIX = "6"
    RAID10 = "raid10"
    TEN = "10"


RAID_LEVELS_WITHOUT_SPARES = frozenset({"linear", "raid0", "0", "stripe"})


class UnitType(_Versioned):
    SERVICE = "service"
    SOCKET = "socket"
    DEVICE = "device"
    MOUNT = "mount"
    AUTOMOUNT = "automount"
    SWAP = "swap"
    TARGET = "target"
    PATH = "path"
    TIMER = "timer"
    SNAPSHOT = "snapshot"
    SLICE = "slice"
    SCOPE = "scope"


class ClevisPin(_Versioned):
    """Pins accepted in ``clevis.custom.pin`` for 3.2–3.5 (3.6 accepts any pin name)."""

    TPM2 = "tpm2"
    TANG = "tang"
    SSS = "sss"


CUSTOM_PIN_ANY_SINCE = V3_6
SPECIAL_MODE_BITS_SINCE = V3_6
# A file/directory/link at the path of a unit or drop-in that has contents: Ignition >= 2.15
# rejects it for every spec; ignition-validate 2.14 (which knows 3.0-3.3) accepts it. We make it
# an error from 3.4 and a warning before, so 3.0-3.3 verdicts stay those of ignition-validate.
SYSTEMD_CONFLICT_ERROR_SINCE = V3_4
LINK_TARGET_REQUIRED_SINCE = V3_3  # before 3.3 a missing link target passes Ignition's validator
PARTITION_LABEL_MAX = 36
LUKS_LABEL_MAX = 47
MODE_MAX = 0o7777
GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


# --------------------------------------------------------------------------- schema types


class Scalar(Enum):
    STRING = "string"
    INT = "integer"
    BOOL = "boolean"


@dataclass(frozen=True)
class ListOf:
    item: TypeSpec
    # list entries never checked for duplicates (Ignition's IgnoreDuplicates)
    allow_duplicates: bool = False
    # name of the list whose key space this one shares (files/directories/links, kargs)
    key_space: str | None = None


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: TypeSpec
    since: SpecVersion = V3_0
    required: bool = False  # documented as required by the spec (checked by validate.py)


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    fields: tuple[FieldSpec, ...]
    key: str | None = None  # field naming an entry in a list (duplicate detection, merging)
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def fields_for(self, version: SpecVersion) -> dict[str, FieldSpec]:
        got = self._cache.get(version)
        if got is None:
            got = {f.name: f for f in self.fields if f.since <= version}
            self._cache[version] = got
        return got

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


TypeSpec = Scalar | ListOf | ObjectSpec

S, I, B = Scalar.STRING, Scalar.INT, Scalar.BOOL


def F(name: str, type_: TypeSpec, since: SpecVersion = V3_0, *, required: bool = False) -> FieldSpec:
    return FieldSpec(name, type_, since, required)


def _strings(*, allow_duplicates: bool = False, key_space: str | None = None) -> ListOf:
    return ListOf(S, allow_duplicates=allow_duplicates, key_space=key_space)


VERIFICATION = ObjectSpec("Verification", (F("hash", S),))
HTTP_HEADER = ObjectSpec("HTTPHeader", (F("name", S, required=True), F("value", S)), key="name")


def _resource(name: str, compression_since: SpecVersion) -> ObjectSpec:
    return ObjectSpec(name, (
        F("compression", S, compression_since),
        F("httpHeaders", ListOf(HTTP_HEADER), V3_1),
        F("source", S),
        F("verification", VERIFICATION),
    ), key="source")


# 3.0 had FileContents (with compression) for files and ConfigReference/CaReference
# (without) elsewhere; 3.1 unified them as Resource.
RESOURCE = _resource("Resource", V3_1)
FILE_RESOURCE = _resource("FileResource", V3_0)

IGNITION_CONFIG = ObjectSpec("IgnitionConfig", (
    F("merge", ListOf(RESOURCE)),
    F("replace", RESOURCE),
))
PROXY = ObjectSpec("Proxy", (
    F("httpProxy", S), F("httpsProxy", S), F("noProxy", _strings()),
))
TLS = ObjectSpec("TLS", (F("certificateAuthorities", ListOf(RESOURCE)),))
SECURITY = ObjectSpec("Security", (F("tls", TLS),))
TIMEOUTS = ObjectSpec("Timeouts", (F("httpResponseHeaders", I), F("httpTotal", I)))
IGNITION = ObjectSpec("Ignition", (
    F("config", IGNITION_CONFIG),
    F("proxy", PROXY, V3_1),
    F("security", SECURITY),
    F("timeouts", TIMEOUTS),
    F("version", S, required=True),
))

KERNEL_ARGUMENTS = ObjectSpec("KernelArguments", (
    F("shouldExist", _strings(key_space="kernelArguments")),
    F("shouldNotExist", _strings(key_space="kernelArguments")),
))

PASSWD_GROUP = ObjectSpec("PasswdGroup", (
    F("gid", I), F("name", S, required=True), F("passwordHash", S),
    F("shouldExist", B, V3_2), F("system", B),
), key="name")
PASSWD_USER = ObjectSpec("PasswdUser", (
    F("gecos", S), F("groups", _strings()), F("homeDir", S), F("name", S, required=True),
    F("noCreateHome", B), F("noLogInit", B), F("noUserGroup", B), F("passwordHash", S),
    F("primaryGroup", S), F("shell", S), F("shouldExist", B, V3_2),
    F("sshAuthorizedKeys", _strings()), F("system", B), F("uid", I),
), key="name")
PASSWD = ObjectSpec("Passwd", (F("groups", ListOf(PASSWD_GROUP)), F("users", ListOf(PASSWD_USER))))

OWNER = ObjectSpec("Owner", (F("id", I), F("name", S)))
_NODE_FIELDS = (F("group", OWNER), F("overwrite", B), F("path", S, required=True), F("user", OWNER))
DIRECTORY = ObjectSpec("Directory", (*_NODE_FIELDS, F("mode", I)), key="path")
FILE = ObjectSpec("File", (
    *_NODE_FIELDS,
    F("append", ListOf(FILE_RESOURCE, allow_duplicates=True)),
    F("contents", FILE_RESOURCE),
    F("mode", I),
), key="path")
LINK = ObjectSpec("Link", (*_NODE_FIELDS, F("hard", B), F("target", S, required=True)), key="path")

PARTITION = ObjectSpec("Partition", (
    F("guid", S), F("label", S), F("number", I), F("resize", B, V3_2), F("shouldExist", B),
    F("sizeMiB", I), F("startMiB", I), F("typeGuid", S), F("wipePartitionEntry", B),
))
DISK = ObjectSpec("Disk", (
    F("device", S, required=True), F("partitions", ListOf(PARTITION)), F("wipeTable", B),
), key="device")
FILESYSTEM = ObjectSpec("Filesystem", (
    F("device", S, required=True), F("format", S), F("label", S),
    F("mountOptions", _strings(allow_duplicates=True), V3_1),
    F("options", _strings(allow_duplicates=True)),
    F("path", S), F("uuid", S), F("wipeFilesystem", B),
), key="device")
TANG = ObjectSpec("Tang", (
    F("advertisement", S, V3_4), F("thumbprint", S, required=True), F("url", S, required=True),
), key="url")
CLEVIS_CUSTOM = ObjectSpec("ClevisCustom", (F("config", S), F("needsNetwork", B), F("pin", S)))
CLEVIS = ObjectSpec("Clevis", (
    F("custom", CLEVIS_CUSTOM), F("tang", ListOf(TANG)), F("threshold", I), F("tpm2", B),
))
CEX = ObjectSpec("Cex", (F("enabled", B),))
LUKS = ObjectSpec("Luks", (
    F("cex", CEX, V3_5), F("clevis", CLEVIS), F("device", S, required=True),
    F("discard", B, V3_4), F("keyFile", RESOURCE), F("label", S), F("name", S, required=True),
    F("openOptions", _strings(allow_duplicates=True), V3_4),
    F("options", _strings(allow_duplicates=True)), F("uuid", S), F("wipeVolume", B),
), key="name")
RAID = ObjectSpec("Raid", (
    F("devices", _strings(), required=True), F("level", S, required=True),
    F("name", S, required=True), F("options", _strings(allow_duplicates=True)), F("spares", I),
), key="name")
STORAGE = ObjectSpec("Storage", (
    F("directories", ListOf(DIRECTORY, key_space="nodes")),
    F("disks", ListOf(DISK)),
    F("files", ListOf(FILE, key_space="nodes")),
    F("filesystems", ListOf(FILESYSTEM)),
    F("links", ListOf(LINK, key_space="nodes")),
    F("luks", ListOf(LUKS), V3_2),
    F("raid", ListOf(RAID)),
))

DROPIN = ObjectSpec("Dropin", (F("contents", S), F("name", S, required=True)), key="name")
UNIT = ObjectSpec("Unit", (
    F("contents", S), F("dropins", ListOf(DROPIN)), F("enabled", B), F("mask", B),
    F("name", S, required=True),
), key="name")
SYSTEMD = ObjectSpec("Systemd", (F("units", ListOf(UNIT)),))

CONFIG = ObjectSpec("Config", (
    F("ignition", IGNITION, required=True),
    F("kernelArguments", KERNEL_ARGUMENTS, V3_3),
    F("passwd", PASSWD),
    F("storage", STORAGE),
    F("systemd", SYSTEMD),
))


def partition_key(entry: dict) -> str:
    """Ignition's Partition.Key(): ``number:N`` if N != 0, else ``label:L``."""
    number = entry.get("number") or 0
    if number:
        return f"number:{number}"
    return f"label:{entry.get('label') or ''}"


def entry_key(spec: ObjectSpec, entry: dict) -> str:
    """The key of a list entry, as Ignition's Key() methods compute it."""
    if spec is PARTITION:
        return partition_key(entry)
    if spec.key is None:
        raise KeyError(f"{spec.name} entries have no key")
    value = entry.get(spec.key)
    return "" if value is None else str(value)
