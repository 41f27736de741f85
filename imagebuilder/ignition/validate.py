"""Validate Ignition configs (spec 3.0.0 … 3.6.0) the way Ignition does.

``validate_config(data)`` returns a :class:`Report` listing every problem with
its JSON path (``$.storage.files.0.path``), line and column. The checks follow
Ignition's validator for the declared spec version, in Ignition's order:

1. JSON syntax (position only), then the version (missing, 2.x, unknown);
2. types against the schema in :mod:`.spec` (wrong types stop validation there,
   as Ignition's decoder does); keys the version does not know are warnings;
3. semantic rules per object (paths, modes, URLs, hashes, units, partitions,
   filesystems, RAID, LUKS/clevis, proxies …);
4. duplicate entries (files, directories and links share one key space, so do
   ``kernelArguments.shouldExist`` and ``shouldNotExist``);
5. warnings for unused keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidConfigError
from . import spec
from .checks import check_hash, check_path, check_url, url_scheme
from .parse import Document, JSONPath, JSONSyntaxError, format_path, parse_json
from .spec import SpecVersion
from .systemd_unit import UnitSyntaxError, parse_unit
from .translate import prune

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    message: str
    path: JSONPath | None = None  # None for JSON syntax errors
    line: int | None = None
    column: int | None = None
    kind: str = "semantic"  # "syntax", "version", "type", "semantic", "unused-key"

    @property
    def json_path(self) -> str | None:
        return None if self.path is None else format_path(self.path)

    def format(self) -> str:
        """``error at $.storage.files.0.path, line 1 col 61: path not absolute``"""
        where = []
        if self.path is not None:
            where.append(self.json_path)
        if self.line is not None:
            where.append(f"line {self.line} col {self.column}")
        loc = f" at {', '.join(where)}" if where else ""
        return f"{self.severity}{loc}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "path": self.json_path, "line": self.line,
                "column": self.column, "message": self.message}


@dataclass
class Report:
    source: str
    version: SpecVersion | None = None
    config: dict | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors

    def passes(self, *, strict: bool = False) -> bool:
        return self.valid and not (strict and self.warnings)

    def to_dict(self, *, strict: bool = False) -> dict[str, Any]:
        return {"file": self.source, "valid": self.passes(strict=strict),
                "version": None if self.version is None else str(self.version),
                "problems": [p.to_dict() for p in self.problems]}


def dotted_path(path: JSONPath | None) -> str:
    """``('storage', 'files', 2, 'path')`` -> ``storage.files[2].path``."""
    if not path:
        return "config"
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def ensure_valid(data: bytes, source: str = "<config>") -> dict:
    """Validate and return the decoded config, or raise InvalidConfigError naming the first error."""
    report = validate_config(data, source=source)
    if report.errors:
        first = report.errors[0]
        where = f"line {first.line} col {first.column}" if first.path is None else dotted_path(first.path)
        more = len(report.errors) - 1
        raise InvalidConfigError(
            f"{source}: {where}: {first.message}" + (f" (and {more} more error{'s' * (more > 1)})" if more else ""),
            hint=f"run: imagebuilder ignition validate {source}")
    assert report.config is not None
    return report.config


def first_problem(data: bytes) -> str | None:
    """The validator's first error, with its JSON path, line and column, or None if the
    config is valid (warnings do not count). For callers that accept a config anyway but
    warn about it, e.g. ``error at $.storage.files.0.path, line 1 col 61: path not absolute``.
    """
    errors = validate_config(data).errors
    return errors[0].format() if errors else None


def validate_config(data: bytes, *, source: str = "<config>") -> Report:
    """Validate an Ignition config given as bytes; never raises for bad input."""
    report = Report(source)
    if not data.strip():
        report.problems.append(Problem(ERROR, "not a config (empty)", None, 1, 1, "syntax"))
        return report
    try:
        doc = parse_json(data)
    except JSONSyntaxError as e:
        report.problems.append(Problem(ERROR, e.message, None, e.line, e.column, "syntax"))
        return report
    _Validator(doc, report).run()
    return report


# --------------------------------------------------------------------------- helpers


def _present(obj: dict, key: str) -> bool:
    return obj.get(key) is not None


def _nonempty(obj: dict, key: str) -> bool:
    return obj.get(key) not in (None, "", [], {})


_TYPE_NAMES = {str: "string", int: "number", float: "number", bool: "boolean", list: "array",
               dict: "object"}


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1  # Ignition's integers are Go ints


def _json_type(v: Any) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


# --------------------------------------------------------------------------- the validator


class _Validator:
    def __init__(self, doc: Document, report: Report):
        self.doc = doc
        self.report = report
        self.version: SpecVersion = spec.LATEST
        self.unused: list[Problem] = []

    # -- reporting

    def add(self, severity: str, path: JSONPath, message: str, kind: str = "semantic") -> None:
        pos = self.doc.value_pos(path)
        self.report.problems.append(Problem(severity, message, tuple(path),
                                            pos.line if pos else None, pos.column if pos else None, kind))

    def err(self, path: JSONPath, message: str) -> None:
        self.add(ERROR, path, message)

    def warn(self, path: JSONPath, message: str) -> None:
        self.add(WARNING, path, message)

    # -- phases

    def run(self) -> None:
        cfg = self.doc.value
        if not isinstance(cfg, dict):
            self.add(ERROR, (), f"config must be a JSON object, not {_json_type(cfg)}", "type")
            return
        if not self.check_version(cfg):
            return
        self.report.version = self.version
        type_errors = len(self.report.problems)
        self.check_types(cfg, spec.CONFIG, ())
        if len(self.report.problems) > type_errors:
            self.report.problems.extend(self.unused)
            return
        self.report.config = cfg
        known = prune(cfg, spec.CONFIG, self.version)  # unused keys play no part in the rules
        self.semantic(known)
        self.dups(known, spec.CONFIG, ())
        self.report.problems.extend(self.unused)

    def check_version(self, cfg: dict) -> bool:
        ign = cfg.get("ignition")
        if ign is not None and not isinstance(ign, dict):
            self.add(ERROR, ("ignition",), f"expected object, got {_json_type(ign)}", "type")
            return False
        raw = (ign or {}).get("version")
        path = ("ignition", "version")
        if raw is None:
            self.add(ERROR, path, "invalid config version (couldn't parse): version is missing", "version")
            return False
        if not isinstance(raw, str):
            self.add(ERROR, path, f"expected string, got {_json_type(raw)}", "type")
            return False
        from .translate import version_from_string

        try:
            self.version = version_from_string(raw)
        except InvalidConfigError as e:
            self.add(ERROR, path, e.message, "version")
            return False
        return True

    def check_types(self, value: Any, type_: spec.TypeSpec, path: JSONPath) -> None:
        """Check value against the schema; record type errors and unused keys."""
        if value is None:  # JSON null leaves the field unset, as in Go
            return
        if isinstance(type_, spec.Scalar):
            ok = {spec.Scalar.STRING: isinstance(value, str),
                  spec.Scalar.BOOL: isinstance(value, bool),
                  spec.Scalar.INT: isinstance(value, int) and not isinstance(value, bool)}[type_]
            if ok and type_ is spec.Scalar.INT and not _INT64_MIN <= value <= _INT64_MAX:
                self.add(ERROR, path, "expected integer, got a number out of range", "type")
            elif not ok:
                got = _json_type(value)
                if isinstance(value, float) and type_ is spec.Scalar.INT:
                    big = not math.isfinite(value) or abs(value) > _INT64_MAX
                    got = "a number out of range" if big else f"number {value:g} (not an integer)"
                self.add(ERROR, path, f"expected {type_.value}, got {got}", "type")
            return
        if isinstance(type_, spec.ListOf):
            if not isinstance(value, list):
                self.add(ERROR, path, f"expected array, got {_json_type(value)}", "type")
                return
            for i, item in enumerate(value):
                self.check_types(item, type_.item, (*path, i))
            return
        if not isinstance(value, dict):
            self.add(ERROR, path, f"expected object, got {_json_type(value)}", "type")
            return
        known = type_.fields_for(self.version)
        # like Ignition: an object's own unused keys first, then its members' problems
        for key in value:
            if key not in known:
                pos = self.doc.key_pos((*path, key))
                hint = ""
                try:
                    later = type_.field(key)
                    hint = f" (needs spec {later.since} or newer; this config is {self.version})"
                except KeyError:
                    pass
                self.unused.append(Problem(WARNING, f"unused key {key}{hint}", (*path, key),
                                           pos.line if pos else None, pos.column if pos else None,
                                           "unused-key"))
        for key, sub in value.items():
            if key in known:
                self.check_types(sub, known[key].type, (*path, key))

    # -- semantic rules, in Ignition's order

    def semantic(self, cfg: dict) -> None:
        self.systemd_conflicts(cfg)
        self.ignition(cfg.get("ignition") or {})
        passwd = cfg.get("passwd") or {}
        for kind in ("groups", "users"):
            for i, entry in enumerate(passwd.get(kind) or []):
                if entry is not None and not entry.get("name"):
                    self.warn(("passwd", kind, i, "name"),
                              f"{kind[:-1]} name is required (Ignition accepts this but creating it fails)")
        self.storage(cfg.get("storage") or {})
        self.systemd(cfg.get("systemd") or {})

    def systemd_conflicts(self, cfg: dict) -> None:
        targets: set[str] = set()
        for unit in (cfg.get("systemd") or {}).get("units") or []:
            if not unit or not unit.get("name"):
                continue
            if _present(unit, "contents"):
                targets.add(f"/etc/systemd/system/{unit['name']}")
            for d in unit.get("dropins") or []:
                if d and d.get("name") and _present(d, "contents"):
                    targets.add(f"/etc/systemd/system/{unit['name']}.d/{d['name']}")
        if not targets:
            return
        storage = cfg.get("storage") or {}
        for kind in ("files", "directories", "links"):
            for i, node in enumerate(storage.get(kind) or []):
                if node and node.get("path") in targets:
                    path = ("storage", kind, i, "path")
                    if self.version >= spec.SYSTEMD_CONFLICT_ERROR_SINCE:
                        self.err(path, "path conflicts with systemd unit or dropin")
                    else:  # Ignition 2.14 accepted this for 3.0-3.3; later releases reject it
                        self.warn(path, "path conflicts with systemd unit or dropin "
                                        "(newer Ignition releases reject this)")

    def ignition(self, ign: dict) -> None:
        base = ("ignition",)
        conf = ign.get("config") or {}
        for i, res in enumerate(conf.get("merge") or []):
            self.resource(res or {}, (*base, "config", "merge", i), entry="merge")
        if conf.get("replace") is not None:
            self.resource(conf["replace"], (*base, "config", "replace"))
        proxy = ign.get("proxy") or {}
        for key in ("httpProxy", "httpsProxy"):
            url = proxy.get(key)
            if url is None:  # an empty string is checked (and rejected), as Ignition does
                continue
            p = (*base, "proxy", key)
            problem = check_url(url, self.version, ["http", "https"])
            if problem == "invalid url scheme":
                self.err(p, "proxies must be http(s)")
            elif problem:
                self.err(p, problem)
            elif key == "httpsProxy" and url_scheme(url) == "http":
                self.warn(p, "insecure plaintext HTTP proxy specified for HTTPS resources")
        cas = ((ign.get("security") or {}).get("tls") or {}).get("certificateAuthorities") or []
        for i, res in enumerate(cas):
            self.resource(res or {}, (*base, "security", "tls", "certificateAuthorities", i), entry="ca")

    def resource(self, res: dict, path: JSONPath, *, entry: str | None = None) -> None:
        """Check a Resource; ``entry`` is "merge" or "ca" for those list entries, which need a source."""
        source = res.get("source")
        if entry and self.version >= spec.V3_1:
            # 3.1+: merged configs and CAs are also checked on the entry itself
            problem = check_url(source, self.version) if source else "source is required"
            if problem:
                self.err(path, problem)
        elif entry == "ca" and not source:  # 3.0 CaReference: source is a plain (required) string
            self.err((*path, "source"), "invalid url scheme")
        elif entry == "merge" and not source:
            self.warn(path, "merge entry has no source (Ignition 3.0.0 accepts it but there is nothing to fetch)")
        comp = res.get("compression")
        if comp and comp not in spec.Compression.allowed(self.version):
            self.err((*path, "compression"), "invalid compression method")
        verification = res.get("verification") or {}
        if verification.get("hash") is not None and source is None:
            self.err((*path, "verification", "hash"), "source must be specified if verification is specified")
        if source:
            problem = check_url(source, self.version)
            if problem:
                self.err((*path, "source"), problem)
        headers = res.get("httpHeaders") or []
        if headers and (not source or url_scheme(source) not in ("http", "https")):
            self.err((*path, "httpHeaders"), "cannot use HTTP headers with this source scheme")
        for i, h in enumerate(headers):
            if h is not None and not h.get("name"):
                self.err((*path, "httpHeaders", i, "name"), "HTTP header name can't be empty")
        if verification.get("hash") is not None:
            problem = check_hash(verification["hash"], self.version)
            if problem:
                self.err((*path, "verification", "hash"), problem)

    # -- storage

    def storage(self, st: dict) -> None:
        base = ("storage",)
        links = [ln for ln in st.get("links") or [] if ln is not None]
        link_paths = [ln.get("path") or "" for ln in links]  # as in Ignition, an empty link path matches "/…"
        dir_paths = [d.get("path") for d in st.get("directories") or [] if d and d.get("path")]
        for kind, what in (("directories", "directory"), ("files", "file"), ("links", "link")):
            for i, node in enumerate(st.get(kind) or []):
                p = (node or {}).get("path") or ""
                for _ in range(sum(p.startswith(lp + "/") for lp in link_paths)):  # once per link
                    self.err((*base, kind, i), f"{what} path includes link in config")
                if kind == "links" and node is not None:
                    self.link_target(node, (*base, kind, i))
                if kind == "links" and node and node.get("hard"):
                    for _ in range(dir_paths.count(node.get("target"))):  # once per matching directory
                        self.err((*base, kind, i), "hard link target is a directory")
        self.filesystem_vs_disks(st)
        for i, d in enumerate(st.get("directories") or []):
            if d is not None:
                self.node(d, (*base, "directories", i), mode=True)
        for i, d in enumerate(st.get("disks") or []):
            if d is not None:
                self.disk(d, (*base, "disks", i))
        for i, f in enumerate(st.get("files") or []):
            if f is not None:
                self.file(f, (*base, "files", i))
        for i, fs in enumerate(st.get("filesystems") or []):
            if fs is not None:
                self.filesystem(fs, (*base, "filesystems", i))
        for i, ln in enumerate(st.get("links") or []):
            if ln is not None:
                self.link(ln, (*base, "links", i))
        for i, lk in enumerate(st.get("luks") or []):
            if lk is not None:
                self.luks(lk, (*base, "luks", i))
        for i, r in enumerate(st.get("raid") or []):
            if r is not None:
                self.raid(r, (*base, "raid", i))

    def filesystem_vs_disks(self, st: dict) -> None:
        disks = {d.get("device"): d for d in st.get("disks") or [] if d and d.get("device")}
        for i, fs in enumerate(st.get("filesystems") or []):
            disk = disks.get((fs or {}).get("device"))
            if disk is None:
                continue
            path = ("storage", "filesystems", i, "device")
            if disk.get("partitions"):
                self.warn(path, "filesystem overwrites partitioned device")
            elif disk.get("wipeTable") and not fs.get("wipeFilesystem"):
                self.warn(path, "device matches disk with wipeTable enabled; filesystem will be wiped")

    def owner(self, node: dict, path: JSONPath) -> None:
        for key in ("group", "user"):
            o = node.get(key) or {}
            if _present(o, "id") and _present(o, "name"):
                self.err((*path, key), "cannot set both id and name")

    def mode(self, node: dict, path: JSONPath) -> None:
        mode = node.get("mode")
        if mode is None:
            return
        if mode < 0 or mode > spec.MODE_MAX:
            self.err((*path, "mode"), "illegal file mode")
        if mode & 0o7000 and self.version < spec.SPECIAL_MODE_BITS_SINCE:
            self.warn((*path, "mode"), "setuid/setgid/sticky bits are not supported in spec versions "
                                       f"older than {spec.SPECIAL_MODE_BITS_SINCE}")

    def node(self, node: dict, path: JSONPath, *, mode: bool) -> None:
        problem = check_path(node.get("path"))
        if problem:
            self.err((*path, "path"), problem)
        if mode:
            self.mode(node, path)

    def file(self, f: dict, path: JSONPath) -> None:
        self.node(f, path, mode=True)
        contents = f.get("contents") or {}
        if f.get("overwrite") and not contents.get("source"):
            self.err((*path, "overwrite"), "overwrite must be false if source is unspecified")
        self.owner(f, path)
        for i, res in enumerate(f.get("append") or []):
            if res is not None:
                self.resource(res, (*path, "append", i))
        self.resource(contents, (*path, "contents"))

    def link_target(self, ln: dict, path: JSONPath) -> None:
        if not ln.get("target"):
            if self.version >= spec.LINK_TARGET_REQUIRED_SINCE:
                self.err((*path, "target"), "link target is required")
            else:
                self.warn((*path, "target"), "link target is empty (Ignition accepts this before spec "
                                             f"{spec.LINK_TARGET_REQUIRED_SINCE} but creating the link fails)")

    def link(self, ln: dict, path: JSONPath) -> None:
        self.node(ln, path, mode=False)
        if ln.get("hard"):
            for key in ("group", "user"):
                if _nonempty(ln, key):
                    self.warn((*path, key), "user and group are ignored for hard links")
        self.owner(ln, path)

    def disk(self, d: dict, path: JSONPath) -> None:
        dev = d.get("device")
        parts = [p for p in d.get("partitions") or []]
        if not dev:
            # without a device Ignition skips the checks across partitions
            self.err((*path, "device"), "disk device is required")
        else:
            problem = check_path(dev)
            if problem:
                self.err((*path, "device"), problem)
            self.partitions_together(parts, path)
        for i, p in enumerate(parts):
            if p is not None:
                self.partition(p, (*path, "partitions", i))

    def partitions_together(self, parts: list, path: JSONPath) -> None:
        """Disk-level partition rules; like Ignition, each reports its first finding only."""
        numbers: set[int] = set()
        for i, p in enumerate(parts):
            n = (p or {}).get("number") or 0
            if n:
                if n in numbers:  # Ignition reports the first collision only
                    self.err((*path, "partitions", i), "partition numbers collide")
                    break
                numbers.add(n)
        self.partition_overlap(parts, path)
        labels: set[str] = set()
        for i, p in enumerate(parts):
            label = (p or {}).get("label")
            if label:
                if label in labels:
                    self.err((*path, "partitions", i), "cannot use the same partition label twice")
                    break
                labels.add(label)
        if any(p and p.get("shouldExist") is False for p in parts) and any(
                not (p or {}).get("number") for p in parts):
            self.err((*path, "partitions"),
                     "shouldExist is false for a partition and other partition(s) has number 0 (no number)")

    def partition_overlap(self, parts: list, path: JSONPath) -> None:
        """Report the first partition overlapping an earlier one. Like Ignition, only partitions
        with a non-zero start and an explicit size count; equal starts always overlap."""
        spans = []
        for i, p in enumerate(parts):
            if p and p.get("startMiB") and p.get("sizeMiB") is not None:
                spans.append((i, p["startMiB"], p["startMiB"] + p["sizeMiB"], p.get("number") or 0))
        for b, (i2, s2, e2, n2) in enumerate(spans):
            for _i1, s1, e1, n1 in spans[:b]:
                if s1 == s2 or (s1 < e2 and s2 < e1):
                    self.err((*path, "partitions", i2), f"partitions overlap (partition {n1} and {n2})")
                    return

    def partition(self, p: dict, path: JSONPath) -> None:
        if p.get("shouldExist") is False and any(
                _present(p, k) for k in ("label", "typeGuid", "guid", "startMiB", "sizeMiB")) or (
                p.get("shouldExist") is False and p.get("resize")):
            self.err(path, "shouldExist specified false with other options also specified")
        if not p.get("number") and not p.get("label"):
            self.err(path, "a partition number >= 1 or a label must be specified")
        label = p.get("label")
        if label is not None:
            if ":" in label:
                self.err((*path, "label"), "partition label will be truncated to text before the colon")
            if len(label) > spec.PARTITION_LABEL_MAX:
                self.err((*path, "label"), f"partition labels may not exceed {spec.PARTITION_LABEL_MAX} characters")
        for key in ("guid", "typeGuid"):
            v = p.get(key)
            if v and not spec.GUID_RE.match(v):
                self.err((*path, key), 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"')

    def filesystem(self, fs: dict, path: JSONPath) -> None:
        if fs.get("path"):
            problem = check_path(fs["path"])
            if problem:
                self.err((*path, "path"), problem)
        problem = check_path(fs.get("device"))
        if problem:
            self.err((*path, "device"), problem)
        fmt = fs.get("format") or ""
        if fmt and fmt not in spec.FilesystemFormat.allowed(self.version):
            self.err((*path, "format"), "invalid filesystem format")
        if not fmt and any(_nonempty(fs, k) for k in ("path", "label", "uuid", "options", "mountOptions")) \
                or not fmt and fs.get("wipeFilesystem"):
            self.err((*path, "format"), "format cannot be empty when path, label, uuid, wipeFilesystem, "
                                        "options, or mountOptions is specified")
        label = fs.get("label")
        if label is not None and not fmt:
            self.err((*path, "label"), "filesystem must specify format if label is specified")
        limit = spec.FILESYSTEM_LABEL_MAX.get(fmt)
        if label is not None and limit is not None and len(label) > limit:
            self.err((*path, "label"), f"filesystem labels cannot be longer than {limit} characters when using {fmt}")

    def raid(self, r: dict, path: JSONPath) -> None:
        level = r.get("level")
        if not level:
            self.err((*path, "level"), "raid level is required")
        elif level not in spec.RaidLevel.allowed(self.version):
            self.err((*path, "level"), "unrecognized raid level")
        elif level in spec.RAID_LEVELS_WITHOUT_SPARES and r.get("spares"):
            self.err((*path, "level"), "spares unsupported for linear and raid0 arrays")
        if not r.get("devices"):
            self.err((*path, "devices"), "raid devices required")
        for i, dev in enumerate(r.get("devices") or []):
            problem = check_path(dev)
            if problem:
                self.err((*path, "devices", i), problem)

    def luks(self, lk: dict, path: JSONPath) -> None:
        name = lk.get("name") or ""
        if "/" in name:
            self.err((*path, "name"), "device names cannot contain slashes")
        label = lk.get("label")
        if label is not None and len(label) > spec.LUKS_LABEL_MAX:
            self.err((*path, "label"), f"luks device labels cannot be longer than {spec.LUKS_LABEL_MAX} characters")
        if not lk.get("device"):
            self.err((*path, "device"), "disk device is required")
        else:
            problem = check_path(lk["device"])
            if problem:
                self.err((*path, "device"), problem)
        clevis = lk.get("clevis") or {}
        key_file = lk.get("keyFile") or {}
        if (lk.get("cex") or {}).get("enabled"):
            if _nonempty(lk, "clevis") or key_file.get("source"):
                self.err((*path, "cex"), "cex cannot be used together with clevis or a key file")
        if key_file:
            src = key_file.get("source")
            if src and check_url(src, self.version):
                # ignition-validate reports this one at ".keys" (sic)
                self.err((*path, "keys"), "invalid key-file source")
            self.resource(key_file, (*path, "keyFile"))
        self.clevis(clevis, (*path, "clevis"))

    def clevis(self, c: dict, path: JSONPath) -> None:
        custom = c.get("custom") or {}
        has_custom = any(_nonempty(custom, k) for k in ("pin", "config")) or _present(custom, "needsNetwork")
        others = c.get("tpm2") or c.get("tang") or c.get("threshold")
        if self.version == spec.V3_2:
            # 3.2.0: any "custom" object conflicts; only pin and config make it need both
            if c.get("custom") is not None and others:
                self.err(path, "cannot use custom clevis config with tpm2, tang, or threshold")
            has_custom = any(_nonempty(custom, k) for k in ("pin", "config"))
        elif custom.get("pin") and others:
            self.err(path, "cannot use custom clevis config with tpm2, tang, or threshold")
        if has_custom:
            pin = custom.get("pin")
            if not pin and self.version > spec.V3_2:
                self.err((*path, "custom", "pin"), "missing required custom clevis pin")
            elif not pin:
                self.err((*path, "custom", "pin"), "unsupported clevis pin")
            elif self.version < spec.CUSTOM_PIN_ANY_SINCE and pin not in spec.ClevisPin.allowed(self.version):
                self.err((*path, "custom", "pin"), "unsupported clevis pin")
            if not custom.get("config"):
                self.err((*path, "custom", "config"), "missing required custom clevis config")
        for i, tang in enumerate(c.get("tang") or []):
            if tang is None:
                continue
            tp = (*path, "tang", i)
            url = tang.get("url")
            if url:
                problem = check_url(url, self.version, ["http", "https"])
                if problem:
                    self.err((*tp, "url"), problem)
            else:
                self.err((*tp, "url"), "tang url is required")
            if not tang.get("thumbprint"):
                self.err((*tp, "thumbprint"), "thumbprint is required")
            adv = tang.get("advertisement")
            if adv:
                try:
                    json.loads(adv)
                except ValueError:
                    self.err((*tp, "advertisement"), "advertisement is not valid JSON")

    # -- systemd

    def systemd(self, sd: dict) -> None:
        units = [u for u in sd.get("units") or []]
        templates = {u.get("name"): u for u in units if u and "@." in (u.get("name") or "")}
        for i, u in enumerate(units):
            if u is None:
                continue
            path = ("systemd", "units", i)
            name = u.get("name") or ""
            ext = name.rsplit(".", 1)[1] if "." in name else ""
            if ext not in spec.UnitType.allowed(self.version):
                self.err((*path, "name"), "invalid systemd unit extension")
            contents = u.get("contents")
            if contents is not None:
                try:
                    sections = parse_unit(contents)
                except UnitSyntaxError as e:
                    self.err((*path, "contents"), f"invalid unit content: {e}")
                else:
                    if u.get("enabled") and contents and "Install" not in sections:
                        self.warn((*path, "contents"),
                                  f"unit {name!r} is enabled, but has no install section so enable does nothing")
            elif u.get("enabled") and "@" in name and not name.split("@", 1)[1].startswith("."):
                template = templates.get(name.split("@", 1)[0] + "@." + ext)
                if template and template.get("contents") is not None:
                    try:
                        if "Install" not in parse_unit(template["contents"]):
                            self.warn((*path, "enabled"), f"template unit of {name!r} has no install "
                                                          "section so enable does nothing")
                    except UnitSyntaxError:
                        pass
            if u.get("enabled") and u.get("mask"):
                self.warn((*path, "mask"), f"unit {name!r} is both enabled and masked; the mask wins and "
                                           "the unit will not start")
            for j, d in enumerate(u.get("dropins") or []):
                if d is None:
                    continue
                dp = (*path, "dropins", j)
                if not (d.get("name") or "").endswith(".conf"):
                    self.err((*dp, "name"), "invalid systemd drop-in extension")
                if d.get("contents") is not None:
                    try:
                        parse_unit(d["contents"])
                    except UnitSyntaxError as e:
                        self.err((*dp, "contents"), f"invalid unit content: {e}")

    # -- duplicates

    def dups(self, value: dict, type_: spec.ObjectSpec, path: JSONPath) -> None:
        known = type_.fields_for(self.version)
        seen: dict[str, set[str]] = {}
        for f in known.values():
            lst = value.get(f.name)
            if not isinstance(f.type, spec.ListOf) or not lst or f.type.allow_duplicates:
                continue
            space = seen.setdefault(f.type.key_space or f.name, set())
            for i, item in enumerate(lst):
                if item is None:
                    continue
                key = item if isinstance(item, str) else spec.entry_key(f.type.item, item)
                if key in space:
                    self.err((*path, f.name, i), "duplicate entry defined")
                space.add(key)
        for f in known.values():
            sub = value.get(f.name)
            if sub is None:
                continue
            if isinstance(f.type, spec.ObjectSpec):
                self.dups(sub, f.type, (*path, f.name))
            elif isinstance(f.type, spec.ListOf) and isinstance(f.type.item, spec.ObjectSpec):
                for i, item in enumerate(sub):
                    if item is not None:
                        self.dups(item, f.type.item, (*path, f.name, i))
