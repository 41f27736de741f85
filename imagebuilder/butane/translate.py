"""Translate a Butane config (YAML) to an Ignition config, as ``butane`` does.

:func:`translate` never raises for bad input: it returns a :class:`Translation`
whose ``problems`` (the same :class:`~imagebuilder.ignition.validate.Problem` the
Ignition validator uses) carry the YAML path, line and column of each error and
warning. The steps, in Butane's order:

1. YAML (first document; hostile YAML refused, see :mod:`.yamlnode`), then
   ``variant``/``version`` (:func:`.schema.resolve_target`);
2. decoding against that version's schema: type errors stop here, unknown keys
   are warnings (:mod:`.schema`); Butane's own rules (:mod:`.rules`);
3. the config itself with its sugar: inline/local contents as data URLs,
   ``contents_local``, ``ssh_authorized_keys_local``, ``storage.trees``;
4. generated configs merged under it with Ignition's merge rules: mount units,
   then the ``boot_device`` layout, then ``grub.users`` (what the user wrote wins);
5. for ``openshift``: FIPS ciphers (up to 4.19), the MCO's restrictions, and the
   MachineConfig wrapper (unless ``raw``);
6. the result validated as Ignition; every problem is reported at the YAML line
   it came from (generated entries at the sugar that generated them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ignition import merge as ign_merge
from ..ignition import spec
from ..ignition.decode import MAX_CONFIG_SIZE, size_text
from ..ignition.validate import ERROR, WARNING, Problem, Report, validate_config
from . import openshift, rules, sugar
from .schema import (V1_0, V1_3, V1_5, BObject, Decoder, Issue, ListT, Target, TargetError,
                     YamlPath, config_schema, resolve_target, snake)
from .sugar import FilesDir, JsonPath, SugarError
from .yamlnode import MAP, SCALAR, SEQ, Node, YAMLError, parse_yaml

_SURROGATE = re.compile("[\ud800-\udfff]")
ERR_ROOT_SMALL = "root should have 8GiB of space assigned"
ERR_ROOT_CONSTRAINED = ("root partition cannot expand; it is set to fill available space but is "
                        "followed by an auto-positioned partition")
ERR_PARTITION_NUMBER = "incorrect partition number; a new partition will be created using reserved label"
RESERVED_LABELS = {"BIOS-BOOT": 1, "PowerPC-PReP-boot": 1, "EFI-SYSTEM": 2, "boot": 3, "root": 4}


@dataclass
class Translation(Report):
    """A validation report whose problems are at YAML paths, plus the translation itself:
    ``config`` is the Ignition config (also for openshift), ``output`` what
    ``butane translate`` writes (JSON, or MachineConfig YAML)."""

    target: Target | None = None
    output: bytes | None = None

    @property
    def ignition(self) -> dict[str, Any] | None:
        return self.config

    def passes(self, *, strict: bool = False) -> bool:
        return self.config is not None and super().passes(strict=strict)

    def ignition_json(self) -> bytes:
        """The Ignition config as compact JSON (what a config-accepting verb embeds)."""
        assert self.config is not None
        return dump_json(self.config)


def dump_json(config: dict[str, Any], *, pretty: bool = False) -> bytes:
    """JSON the way Butane's Go encoder writes it (HTML characters escaped), plus a newline."""
    text = json.dumps(config, ensure_ascii=False, indent=2 if pretty else None,
                      separators=(",", ": ") if pretty else (",", ":"))
    for c, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                   ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(c, esc)
    return (text + "\n").encode("utf-8")


def translate(data: bytes, *, source: str = "<stdin>", files_dir: str | Path | None = None,
              raw: bool = False, pretty: bool = False, experimental: bool = False) -> Translation:
    """Translate Butane YAML to Ignition. Never raises for bad input (see ``problems``)."""
    return _Translator(data, source, FilesDir(files_dir), raw=raw, pretty=pretty,
                       experimental=experimental).run()


class _Stop(Exception):
    pass


class _Translator:
    def __init__(self, data: bytes, source: str, files_dir: FilesDir, *, raw: bool, pretty: bool,
                 experimental: bool):
        self.data = data
        self.files_dir = files_dir
        self.raw = raw
        self.pretty = pretty
        self.experimental = experimental
        self.result = Translation(source)
        self.root: Node | None = None
        self.target: Target | None = None
        self.ts: dict[JsonPath, YamlPath] = {}  # the user config's JSON -> YAML exceptions
        self.pieces: list[tuple[str, dict, list[tuple[JsonPath, YamlPath]]]] = []

    # -- reporting

    def position(self, path: YamlPath, at_key: bool = False) -> tuple[int | None, int | None]:
        node = self.root
        if node is None:
            return None, None
        best = node
        for i, step in enumerate(path):
            if node.kind == MAP and isinstance(step, str):
                if at_key and i == len(path) - 1:
                    k = node.key_node(step)
                    return (k.line, k.column) if k else (best.line, best.column)
                nxt = node.get(step)
            elif node.kind == SEQ and isinstance(step, int) and 0 <= step < len(node.items):
                nxt = node.items[step]
            else:
                nxt = None
            if nxt is None:
                break
            node = best = nxt
        return best.line, best.column

    def add(self, severity: str, path: YamlPath, message: str, *, at_key: bool = False,
            kind: str = "semantic") -> None:
        line, col = self.position(path, at_key)
        problem = Problem(severity, message, tuple(path), line, col, kind)
        if problem not in self.result.problems:  # e.g. one per file of a tree: said once
            self.result.problems.append(problem)

    def add_issues(self, issues: list[Issue], kind: str = "semantic") -> None:
        for i in issues:
            self.add(i.severity, i.path, i.message, at_key=i.at_key,
                     kind="unused-key" if i.at_key else kind)

    def stop_on_errors(self) -> None:
        if self.result.errors:
            raise _Stop

    # -- the steps

    def run(self) -> Translation:
        try:
            self._run()
        except _Stop:
            self.result.config = self.result.output = None
        return self.result

    def _run(self) -> None:
        if len(self.data) > MAX_CONFIG_SIZE:
            self.add(ERROR, (), f"config is larger than the {size_text(MAX_CONFIG_SIZE)} limit", kind="syntax")
            raise _Stop
        try:
            self.root = parse_yaml(self.data)
        except YAMLError as e:
            self.result.problems.append(Problem(ERROR, e.message, None, e.line, e.column, "syntax"))
            raise _Stop from None
        root = self.root
        if root is None or root.is_null:
            self.add(ERROR, (), "error parsing variant; must be specified", kind="version")
            raise _Stop
        if root.kind != MAP:
            self.add(ERROR, (), f"cannot unmarshal {root.describe()} into a Butane config (a mapping)", kind="type")
            raise _Stop
        target = self.resolve(root)
        schema = config_schema(target.variant, target.experimental)
        dec = Decoder(target.fcos, target.variant)
        cfg = dec.decode_object(root, schema, ()) or {}
        self.add_issues(dec.issues, kind="type")
        self.check_unicode(cfg, ())
        self.stop_on_errors()
        self.add_issues(rules.check(cfg, schema, target))
        self.stop_on_errors()

        ign = self.user_config(cfg, schema)
        self.stop_on_errors()
        config = self.merge_generated(ign, cfg, target.fcos)
        if target.variant == "openshift":
            self.openshift(config, cfg)
        self.stop_on_errors()
        config["ignition"] = {**(config.get("ignition") or {}), "version": target.ignition}
        config = _ordered(config, spec.CONFIG)
        self.validate_output(config, target)
        self.stop_on_errors()
        self.result.config = config
        if target.variant == "openshift" and not self.raw:
            self.result.output = openshift.to_yaml(openshift.machine_config(config, cfg))
        else:
            self.result.output = dump_json(config, pretty=self.pretty)

    def merge_generated(self, ign: dict, cfg: dict, v) -> dict:
        """Merge what sugar generates under the user's config (what the user wrote wins), in
        Butane's order: mount units, the boot_device layout, then GRUB users."""
        self.pieces = [("user", ign, [])]
        config = self.merge_under(ign, "mounts", sugar.mount_units(cfg.get("storage") or {}, v))
        if v >= V1_3:
            config = self.merge_under(config, "boot", sugar.boot_device(cfg.get("boot_device") or {}, v))
        self.partition_warnings(config)
        if v >= V1_5:
            config = self.merge_under(config, "grub", sugar.grub_users((cfg.get("grub") or {}).get("users") or []))
        return config

    def merge_under(self, config: dict, name: str, gen: sugar.Generated) -> dict:
        if not gen.config:
            return config
        self.pieces.append((name, gen.config, gen.provenance))
        return ign_merge.merge_struct("Config", gen.config, config)

    def resolve(self, root: Node) -> Target:
        def text(key: str) -> str:
            n = root.get(key)
            return n.value if n is not None and n.kind == SCALAR and not n.is_null else ""

        try:
            self.target = self.result.target = resolve_target(text("variant"), text("version"),
                                                               experimental=self.experimental)
            if not self.target.experimental:
                self.result.version = spec.SpecVersion.parse(self.target.ignition)
        except TargetError as e:
            where = ("variant",) if str(e).startswith(("error parsing variant", "variant", "rhcos")) \
                else ("version",)
            self.add(ERROR, where, str(e), kind="version")
            raise _Stop from None
        return self.target

    def check_unicode(self, value: Any, path: YamlPath) -> None:
        if isinstance(value, str):
            if _SURROGATE.search(value):
                self.add(ERROR, path, "string is not valid Unicode (lone UTF-16 surrogate)", kind="type")
        elif isinstance(value, dict):
            for k, v in value.items():
                self.check_unicode(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_unicode(v, (*path, i))

    # -- the user's config and its sugar

    def user_config(self, cfg: dict, schema: BObject) -> dict[str, Any]:
        ign = self.to_json(cfg, schema, (), ())
        ign.setdefault("ignition", {})
        errors: list[SugarError] = []
        prov: list[tuple[JsonPath, YamlPath]] = []
        trees = (cfg.get("storage") or {}).get("trees") or []
        if trees:
            sugar.add_trees(ign, trees, self.files_dir, prov, errors)
        quadlets = (cfg.get("systemd") or {}).get("quadlets") or []
        if quadlets:
            sugar.add_quadlets(ign, quadlets, self.files_dir, prov, errors)
        self.ts.update(prov)
        for e in errors:
            self.add(ERROR, e.path, e.message)
        return ign

    def to_json(self, value: Any, type_: Any, ypath: YamlPath, jpath: JsonPath) -> Any:
        if isinstance(type_, BObject):
            out: dict[str, Any] = {}
            for f in type_.fields:
                if f.json is None or f.name not in value:
                    continue
                j = self.to_json(value[f.name], f.type, (*ypath, f.name), (*jpath, f.json))
                if j is None or j == [] or j == {}:
                    continue
                out[f.json] = j
            hook = getattr(self, f"sugar_{type_.name}", None)
            if hook is not None:
                hook(value, out, ypath, jpath)
            return out
        if isinstance(type_, ListT):
            return [self.to_json(v, type_.item, (*ypath, i), (*jpath, i)) for i, v in enumerate(value)]
        return value

    def sugar_FileResource(self, value: dict, out: dict, ypath: YamlPath, jpath: JsonPath) -> None:
        self.sugar_Resource(value, out, ypath, jpath)

    def sugar_Resource(self, value: dict, out: dict, ypath: YamlPath, jpath: JsonPath) -> None:
        assert self.target is not None
        for key in ("local", "inline"):
            if value.get(key) is None:
                continue
            kpath = (*ypath, key)
            if self.target.fcos == V1_0:  # inline only; always URL-escaped, no compression field
                out["source"] = sugar.legacy_inline_url(value[key])
                self.ts[(*jpath, "source")] = kpath
                continue
            if key == "local":
                try:
                    data = self.files_dir.read(value[key], kpath)
                except SugarError as e:
                    self.add(ERROR, e.path, e.message)
                    continue
            else:
                data = value[key].encode("utf-8")
            if ypath[:2] == ("ignition", "config"):
                self.check_embedded_config(data, kpath)
            allow = not (self.target.openshift_minor is not None and self.target.openshift_minor <= 9)
            url, comp = sugar.make_data_url(data, value.get("compression"), allow_compression=allow)
            out["source"] = url
            self.ts[(*jpath, "source")] = kpath
            if comp is not None:
                out["compression"] = comp
                self.ts[(*jpath, "compression")] = kpath

    def check_embedded_config(self, data: bytes, path: YamlPath) -> None:
        """An Ignition config merged from inline/local contents must be valid (Butane checks it,
        skipping configs of a version it does not know)."""
        report = validate_config(data, source="embedded config")
        version_problem = next((p for p in report.errors if p.kind == "version"), None)
        if version_problem is not None:
            self.add(WARNING, path, "skipping validation for the merge/replace ignition config: "
                                    f"{version_problem.message}")
            return
        for p in report.problems:
            self.add(p.severity, path, f"embedded Ignition config: {p.format()}")

    def sugar_Unit(self, value: dict, out: dict, ypath: YamlPath, jpath: JsonPath) -> None:
        if value.get("contents_local"):
            kpath = (*ypath, "contents_local")
            try:
                out["contents"] = self.files_dir.read(value["contents_local"], kpath).decode("utf-8", "replace")
                self.ts[(*jpath, "contents")] = kpath
            except SugarError as e:
                self.add(ERROR, e.path, e.message)

    sugar_Dropin = sugar_Unit

    def sugar_PasswdUser(self, value: dict, out: dict, ypath: YamlPath, jpath: JsonPath) -> None:
        locals_ = value.get("ssh_authorized_keys_local") or []
        if not locals_:
            return
        kpath = (*ypath, "ssh_authorized_keys_local")
        if self.files_dir.root is None:
            self.add(ERROR, kpath, sugar.NO_FILES_DIR)
            return
        keys = out.setdefault("sshAuthorizedKeys", [])
        for k, name in enumerate(locals_):
            try:
                text = self.files_dir.read(name, (*kpath, k)).decode("utf-8", "replace")
            except SugarError as e:
                self.add(ERROR, e.path, e.message)
                continue
            for line in re.split(r"\r?\n", text):
                if line:
                    self.ts[(*jpath, "sshAuthorizedKeys", len(keys))] = (*kpath, k)
                    keys.append(line)
        if not keys:
            del out["sshAuthorizedKeys"]

    def sugar_Partition(self, value: dict, out: dict, ypath: YamlPath, jpath: JsonPath) -> None:
        if out.get("number") == 0:  # a Go int with omitempty: 0 is not written
            del out["number"]

    # -- checks on the generated config

    def partition_warnings(self, config: dict) -> None:
        assert self.target is not None
        for i, disk in enumerate((config.get("storage") or {}).get("disks") or []):
            parts = disk.get("partitions") or []
            for p, part in enumerate(parts):
                label = part.get("label")
                if label is None:
                    continue
                where = ("storage", "disks", i, "partitions", p)
                if self.target.fcos >= V1_3 and label == "root":
                    size = part.get("sizeMiB")
                    if not size:
                        if any(not o.get("startMiB") for j, o in enumerate(parts) if j != p):
                            self.add_json(WARNING, (*where, "label"), ERR_ROOT_CONSTRAINED, config)
                    elif size < 8192:
                        self.add_json(WARNING, (*where, "sizeMiB"), ERR_ROOT_SMALL, config)
                if not disk.get("wipeTable") and label in RESERVED_LABELS \
                        and (part.get("number") or 0) != RESERVED_LABELS[label]:
                    self.add_json(WARNING, (*where, "label"), ERR_PARTITION_NUMBER, config)

    def openshift(self, config: dict, cfg: dict) -> None:
        assert self.target is not None and self.target.openshift_minor is not None
        minor = self.target.openshift_minor
        fields = cfg.get("openshift") or {}
        if minor <= 19 and fields.get("fips"):
            openshift.add_fips_cipher(config)
        for jpath, msg in openshift.support_checks(config, minor):
            self.add_json(ERROR, jpath, msg, config)
        if self.raw:
            for yname in openshift.SPEC_FIELDS:
                if fields.get(yname) not in (None, [], ""):
                    self.add(WARNING, ("openshift", yname), "field ignored in raw mode")
        else:
            for jpath, msg in openshift.field_filters(config, minor):
                self.add_json(ERROR, jpath, msg, config)

    def validate_output(self, config: dict, target: Target) -> None:
        check = config
        if target.experimental:  # validated by the rules of the newest stable spec
            check = {**config, "ignition": {**config["ignition"], "version": str(spec.LATEST)}}
        report = validate_config(dump_json(check), source="generated config")
        for p in report.problems:
            if p.path is None:
                self.add(p.severity, (), p.message, kind=p.kind)
            else:
                self.add_json(p.severity, p.path, p.message, config)

    # -- JSON paths of the generated config back to YAML

    def add_json(self, severity: str, jpath: JsonPath, message: str, final: dict) -> None:
        self.add(severity, self.yaml_path(jpath, final), message)

    def yaml_path(self, jpath: JsonPath, final: dict) -> YamlPath:
        steps = _keyed_steps(final, jpath)
        best: tuple[int, int, str, list] = (-1, 0, "user", [])
        for prio, (name, piece, _prov) in enumerate(self.pieces):
            matched = _match(piece, steps)
            if len(matched) > best[0]:
                best = (len(matched), prio, name, matched)
        _n, prio, name, matched = best
        if name == "user":
            for cut in range(len(matched), 0, -1):
                hit = self.ts.get(tuple(matched[:cut]))
                if hit is not None:
                    return hit
            rest = [s for s, _k in steps[len(matched):]]
            return tuple(snake(s) if isinstance(s, str) else s for s in (*matched, *rest))
        prov = dict(self.pieces[prio][2])
        for cut in range(len(matched), -1, -1):
            hit = prov.get(tuple(matched[:cut]))
            if hit is not None:
                return hit
        return ()


def _keyed_steps(final: dict, jpath: JsonPath) -> list[tuple[str | int, Any]]:
    """Each step of a JSON path, list indices paired with the merge key of their entry."""
    steps: list[tuple[str | int, Any]] = []
    node: Any = final
    tname: str | None = "Config"
    for step in jpath:
        if isinstance(step, int):
            item = node[step] if isinstance(node, list) and 0 <= step < len(node) else None
            steps.append((step, _entry_key(tname, item)))
            node = item
        else:
            f = ign_merge.TYPES.get(tname or "", {}).get(step)
            steps.append((step, None))
            node = node.get(step) if isinstance(node, dict) else None
            tname = f.type if f is not None else None
    return steps


def _entry_key(tname: str | None, item: Any) -> Any:
    if item is None:
        return None
    if tname is None:
        return item if isinstance(item, str) else None
    return ign_merge._key(tname, item) if isinstance(item, dict) else None


def _match(piece: dict, steps: list[tuple[str | int, Any]]) -> list[str | int]:
    """The longest prefix of ``steps`` that exists in piece, as a JSON path into piece."""
    out: list[str | int] = []
    node: Any = piece
    tname: str | None = "Config"
    for step, key in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or key is None:
                break
            idx = next((j for j, it in enumerate(node) if _entry_key(tname, it) == key), None)
            if idx is None:
                break
            out.append(idx)
            node = node[idx]
        else:
            if not isinstance(node, dict) or step not in node:
                break
            f = ign_merge.TYPES.get(tname or "", {}).get(step)
            out.append(step)
            node = node[step]
            tname = f.type if f is not None else None
    return out


def _ordered(value: Any, type_: Any) -> Any:
    """A copy with keys in the order Ignition's Go structs have them (Butane's output order)."""
    if isinstance(type_, spec.ObjectSpec) and isinstance(value, dict):
        out = {f.name: _ordered(value[f.name], f.type) for f in type_.fields if f.name in value}
        out.update((k, v) for k, v in value.items() if k not in out)
        return out
    if isinstance(type_, spec.ListOf) and isinstance(value, list):
        return [_ordered(v, type_.item) for v in value]
    return value
