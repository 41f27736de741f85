"""Ignition config merging, with the exact semantics of Ignition's ``config/merge``.

What Ignition does when a config lists others in ``ignition.config.merge``
(``internal/exec/config_fetcher.go`` ``RenderConfig``):

* ``ignition.config.replace`` with a source: the referenced config (rendered
  recursively) replaces the whole config, merge list included.
* otherwise each ``merge[]`` entry, in order, is fetched, rendered depth first
  (its own references first) and merged as a child over the accumulated result.

The merge of a child over a parent (``config/merge/merge.go``), expressed on
JSON dicts of one spec version (3.6.0 here):

* nested objects are merged recursively;
* a scalar the child sets (non-null) wins, otherwise the parent's stays. This
  also holds for ``compression``: a child that sets only ``source`` inherits
  the parent's ``gzip``;
* lists marked "append" (``files[].append``, ``filesystems[].options``,
  ``filesystems[].mountOptions``, ``luks[].options``, ``raid[].options``):
  parent entries followed by child entries;
* every other list is keyed (see :data:`TYPES`): a parent entry whose key the
  child has in the same list is merged with it (in the parent's position),
  child entries with new keys are appended; primitive lists (ssh keys, groups,
  kernel arguments, raid devices, noProxy) are keyed by the string itself, so
  they are appended with de-duplication;
* ``files``/``directories``/``links`` share one key space (``path``), as do
  ``kernelArguments.shouldExist``/``shouldNotExist``: a child entry in a
  *different* list removes the parent's entry;
* a child HTTP header without a ``value`` removes the parent's header.

Keys Ignition does not know are dropped (Go's decoder ignores them), so the
output has only spec fields. Empty objects and lists are omitted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidConfigError
from . import decode

OUTPUT_VERSION = "3.6.0"

# ---------------------------------------------------------------------------
# The shape of a config (spec 3.6.0; older 3.x versions are subsets)


@dataclass(frozen=True)
class F:
    """How one field merges.

    kind: ``scalar`` (a Go pointer: child wins when set), ``key`` (a Go value
    field, always an entry's key: child wins), ``struct`` (merged recursively),
    ``list`` (keyed unless ``append``). ``type`` names the struct type of a
    struct field or of list items (None: a list of strings).
    """

    kind: str
    type: str | None = None
    append: bool = False


SCALAR = F("scalar")
KEY = F("key")


def S(t: str) -> F:
    return F("struct", t)


def L(t: str | None = None, *, append: bool = False) -> F:
    return F("list", t, append)


# Field order here is the output order (the order of the spec documentation).
TYPES: dict[str, dict[str, F]] = {
    "Config": {"ignition": S("Ignition"), "storage": S("Storage"), "systemd": S("Systemd"),
               "passwd": S("Passwd"), "kernelArguments": S("KernelArguments")},
    "Ignition": {"version": KEY, "config": S("IgnitionConfig"), "timeouts": S("Timeouts"),
                 "security": S("Security"), "proxy": S("Proxy")},
    "IgnitionConfig": {"merge": L("Resource"), "replace": S("Resource")},
    "Resource": {"source": SCALAR, "compression": SCALAR, "httpHeaders": L("HTTPHeader"),
                 "verification": S("Verification")},
    "HTTPHeader": {"name": KEY, "value": SCALAR},
    "Verification": {"hash": SCALAR},
    "Timeouts": {"httpResponseHeaders": SCALAR, "httpTotal": SCALAR},
    "Security": {"tls": S("TLS")},
    "TLS": {"certificateAuthorities": L("Resource")},
    "Proxy": {"httpProxy": SCALAR, "httpsProxy": SCALAR, "noProxy": L()},
    "Storage": {"disks": L("Disk"), "raid": L("Raid"), "filesystems": L("Filesystem"),
                "files": L("File"), "directories": L("Directory"), "links": L("Link"),
                "luks": L("Luks")},
    "Disk": {"device": KEY, "wipeTable": SCALAR, "partitions": L("Partition")},
    "Partition": {"label": SCALAR, "number": KEY, "sizeMiB": SCALAR, "startMiB": SCALAR,
                  "typeGuid": SCALAR, "guid": SCALAR, "wipePartitionEntry": SCALAR,
                  "shouldExist": SCALAR, "resize": SCALAR},
    "Raid": {"name": KEY, "level": SCALAR, "devices": L(), "spares": SCALAR,
             "options": L(append=True)},
    "Filesystem": {"device": KEY, "format": SCALAR, "path": SCALAR, "wipeFilesystem": SCALAR,
                   "label": SCALAR, "uuid": SCALAR, "options": L(append=True),
                   "mountOptions": L(append=True)},
    "File": {"path": KEY, "overwrite": SCALAR, "contents": S("Resource"),
             "append": L("Resource", append=True), "mode": SCALAR, "user": S("NodeUser"),
             "group": S("NodeGroup")},
    "Directory": {"path": KEY, "overwrite": SCALAR, "mode": SCALAR, "user": S("NodeUser"),
                  "group": S("NodeGroup")},
    "Link": {"path": KEY, "overwrite": SCALAR, "user": S("NodeUser"), "group": S("NodeGroup"),
             "target": SCALAR, "hard": SCALAR},
    "NodeUser": {"id": SCALAR, "name": SCALAR},
    "NodeGroup": {"id": SCALAR, "name": SCALAR},
    "Luks": {"name": KEY, "device": SCALAR, "keyFile": S("Resource"), "label": SCALAR,
             "uuid": SCALAR, "options": L(append=True), "discard": SCALAR, "openOptions": L(),
             "wipeVolume": SCALAR, "clevis": S("Clevis"), "cex": S("Cex")},
    "Clevis": {"tang": L("Tang"), "tpm2": SCALAR, "threshold": SCALAR, "custom": S("ClevisCustom")},
    "Tang": {"url": KEY, "thumbprint": SCALAR, "advertisement": SCALAR},
    "ClevisCustom": {"pin": SCALAR, "config": SCALAR, "needsNetwork": SCALAR},
    "Cex": {"enabled": SCALAR},
    "Systemd": {"units": L("Unit")},
    "Unit": {"name": KEY, "enabled": SCALAR, "mask": SCALAR, "contents": SCALAR,
             "dropins": L("Dropin")},
    "Dropin": {"name": KEY, "contents": SCALAR},
    "Passwd": {"users": L("PasswdUser"), "groups": L("PasswdGroup")},
    "PasswdUser": {"name": KEY, "passwordHash": SCALAR, "sshAuthorizedKeys": L(), "uid": SCALAR,
                   "gecos": SCALAR, "homeDir": SCALAR, "noCreateHome": SCALAR,
                   "primaryGroup": SCALAR, "groups": L(), "noUserGroup": SCALAR,
                   "noLogInit": SCALAR, "shell": SCALAR, "shouldExist": SCALAR, "system": SCALAR},
    "PasswdGroup": {"name": KEY, "gid": SCALAR, "passwordHash": SCALAR, "shouldExist": SCALAR,
                    "system": SCALAR},
    "KernelArguments": {"shouldExist": L(), "shouldNotExist": L()},
}

# lists of one struct that share a key space (Go: MergedKeys)
SHARED_KEYS: dict[str, dict[str, str]] = {
    "Storage": {"files": "node", "directories": "node", "links": "node"},
    "KernelArguments": {"shouldExist": "karg", "shouldNotExist": "karg"},
}


def _key(type_name: str | None, item: Any) -> str:
    """The merge key of a list entry (Go: ``Key()``)."""
    if type_name is None:
        return item if isinstance(item, str) else json.dumps(item)
    get = item.get
    if type_name == "Partition":
        number = get("number") or 0
        if number:
            return f"number:{number}"
        label = get("label")
        return f"label:{label}" if label is not None else ""
    if type_name == "Resource":
        return get("source") or ""
    if type_name in ("Disk", "Filesystem"):
        return get("device") or ""
    if type_name in ("File", "Directory", "Link"):
        return get("path") or ""
    if type_name == "Tang":
        return get("url") or ""
    return get("name") or ""  # Raid, Luks, Unit, Dropin, users, groups, HTTPHeader


# ---------------------------------------------------------------------------
# Shape checking (clear errors for configs that skipped validation)


def _check_obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidConfigError(f"{where}: expected an object, got {_json_type(value)}")
    return value


def _check_list(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidConfigError(f"{where}: expected a list, got {_json_type(value)}")
    return value


def _check_scalar(value: Any, where: str) -> Any:
    if isinstance(value, (Mapping, list)):
        raise InvalidConfigError(f"{where}: expected a string, number or boolean, got {_json_type(value)}")
    return value


def _json_type(v: Any) -> str:
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "null"


# ---------------------------------------------------------------------------
# The struct merge


def merge_struct(type_name: str, parent: Any, child: Any, *, parent_path: str = "$",
                 child_path: str = "$") -> dict[str, Any]:
    """Merge ``child`` over ``parent`` (both of struct type ``type_name``).

    Returns a new dict; inputs are not modified. Unknown keys are dropped.
    """
    spec = TYPES[type_name]
    p = _check_obj(parent, parent_path)
    c = _check_obj(child, child_path)
    shared = SHARED_KEYS.get(type_name, {})

    # index the child's keyed lists: (key space, key) -> (list name, entry)
    index: dict[tuple[str, str], tuple[str, Any, int]] = {}
    for name, f in spec.items():
        if f.kind != "list" or f.append:
            continue
        space = shared.get(name, name)
        for i, item in enumerate(_check_list(c.get(name), f"{child_path}.{name}")):
            if f.type is not None:
                _check_obj(item, f"{child_path}.{name}[{i}]")
            index[(space, _key(f.type, item))] = (name, item, i)

    out: dict[str, Any] = {}
    for name, f in spec.items():
        pp, cp = f"{parent_path}.{name}", f"{child_path}.{name}"
        pv, cv = p.get(name), c.get(name)
        if f.kind in ("scalar", "key"):
            v = _check_scalar(cv, cp) if cv is not None else _check_scalar(pv, pp)
            if v is not None:
                out[name] = v
        elif f.kind == "struct":
            merged = merge_struct(f.type or "", pv, cv, parent_path=pp, child_path=cp)
            if merged:
                out[name] = merged
        elif f.append:
            items = [_copy_item(f.type, x, f"{pp}[{i}]") for i, x in enumerate(_check_list(pv, pp))]
            items += [_copy_item(f.type, x, f"{cp}[{i}]") for i, x in enumerate(_check_list(cv, cp))]
            if items:
                out[name] = items
        else:
            merged_list = _merge_keyed(name, f, shared.get(name, name), pv, cv, index, pp, cp)
            if merged_list:
                out[name] = merged_list
    return out


def _merge_keyed(name: str, f: F, space: str, pv: Any, cv: Any,
                 index: dict[tuple[str, str], tuple[str, Any, int]], pp: str, cp: str) -> list[Any]:
    plist = _check_list(pv, pp)
    clist = _check_list(cv, cp)
    result: list[Any] = []
    parent_keys: set[str] = set()
    for i, item in enumerate(plist):
        where = f"{pp}[{i}]"
        if f.type is not None:
            _check_obj(item, where)
        k = _key(f.type, item)
        parent_keys.add(k)
        hit = index.get((space, k))
        if hit is None:  # only in the parent
            result.append(_copy_item(f.type, item, where))
            continue
        hit_list, child_item, ci = hit
        if hit_list != name:
            continue  # the child has this path in another list: the parent's entry goes
        if f.type is None:
            result.append(_check_scalar(child_item, f"{cp}[{ci}]"))
        elif f.type == "HTTPHeader" and child_item.get("value") is None:
            continue  # a child header without a value deletes the parent's
        else:
            result.append(merge_struct(f.type, item, child_item, parent_path=where,
                                       child_path=f"{cp}[{ci}]"))
    for i, item in enumerate(clist):
        if _key(f.type, item) not in parent_keys:
            result.append(_copy_item(f.type, item, f"{cp}[{i}]"))
    return result


def _copy_item(type_name: str | None, item: Any, where: str) -> Any:
    if type_name is None:
        return _check_scalar(item, where)
    return merge_struct(type_name, {}, item, child_path=where)


def normalize(config: Mapping[str, Any], *, where: str = "$") -> dict[str, Any]:
    """A copy of a config with only spec fields and without nulls or empty objects/lists."""
    return merge_struct("Config", {}, config, child_path=where)


def merge_configs(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """One Ignition merge step: ``child`` over ``parent`` (same spec version)."""
    return merge_struct("Config", parent, child, parent_path="$parent", child_path="$child")


# ---------------------------------------------------------------------------
# Loading inputs and rendering references


@dataclass
class Inline:
    """A child config that is already loaded (a CHILD file on the command line)."""

    config: dict[str, Any]
    name: str


@dataclass
class MergeResult:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


Loader = Callable[[bytes, str], dict[str, Any]]


def load_config(raw: bytes, where: str) -> dict[str, Any]:
    """Validate a config and translate it to :data:`OUTPUT_VERSION`.

    Each config must be valid on its own, as Ignition requires of every fetched
    config. ``where`` names the input in error messages.
    """
    from .translate import translate
    from .validate import ensure_valid

    return translate(ensure_valid(raw, source=where), OUTPUT_VERSION)


def check_merged(config: dict[str, Any]) -> None:
    """Ignition refuses a merge result that is not valid ("merging configs resulted in an
    invalid config"), e.g. two partitions with one label, or a file owner with id and name."""
    from .validate import dotted_path, validate_config

    report = validate_config(json.dumps(config).encode(), source="merged config")
    if report.errors:
        first = report.errors[0]
        more = len(report.errors) - 1
        raise InvalidConfigError(
            "merging configs resulted in an invalid config: "
            f"{dotted_path(first.path)}: {first.message}"
            + (f" (and {more} more error{'s' * (more > 1)})" if more else ""),
            hint="Ignition would fail the same way; change the child so the merged entry stays valid")


def _fetch_inline(ref: Mapping[str, Any], where: str, loader: Loader) -> dict[str, Any]:
    """Decode a data-URL reference (merge/replace entry) into a loaded config."""
    data = decode.decode_contents(ref, where=where, limit=decode.MAX_CONFIG_SIZE)
    assert data is not None
    hash_spec = (ref.get("verification") or {}).get("hash")
    if hash_spec:
        decode.verify_hash(data, hash_spec, where=f"{where}.verification.hash")
    return loader(data, where)


class _Renderer:
    def __init__(self, loader: Loader, max_depth: int = 16):
        self.loader = loader
        self.max_depth = max_depth
        self.warnings: list[str] = []

    def render(self, cfg: dict[str, Any], name: str, extra: Sequence[Inline] = (),
               depth: int = 0) -> dict[str, Any]:
        if depth > self.max_depth:
            raise InvalidConfigError(f"{name}: config references nest deeper than {self.max_depth} levels")
        iconf = (cfg.get("ignition") or {}).get("config") or {}
        replace = iconf.get("replace") or {}
        if replace.get("source") is not None:
            where = f"{name}: $.ignition.config.replace"
            if extra:
                self.warnings.append(
                    f"{name} sets ignition.config.replace, so Ignition replaces it and never "
                    f"merges {', '.join(e.name for e in extra)}")
            if decode.source_scheme(replace["source"]) == "data":
                new = _fetch_inline(replace, where, self.loader)
                return self.render(new, f"{where} (inline)", depth=depth + 1)
            self.warnings.append(f"{where}: remote source {replace['source']} is not fetched; "
                                 "Ignition will replace the config with it at boot")
            return cfg
        merged = cfg
        refs: list[Mapping[str, Any] | Inline] = [*(iconf.get("merge") or []), *extra]
        for i, ref in enumerate(refs):
            if isinstance(ref, Inline):
                child, cname = ref.config, ref.name
            else:
                where = f"{name}: $.ignition.config.merge[{i}]"
                src = ref.get("source")
                if decode.source_scheme(src) != "data":
                    self.warnings.append(
                        f"{where}: remote source {src} is not fetched; it stays in "
                        "ignition.config.merge and Ignition merges it at boot (after everything here)")
                    continue
                child, cname = _fetch_inline(ref, where, self.loader), f"{where} (inline)"
            child = self.render(child, cname, depth=depth + 1)
            merged = merge_configs(merged, child)
        return merged


def _drop_resolved_references(cfg: dict[str, Any]) -> dict[str, Any]:
    """Remove data-URL merge/replace references (their content is already merged in)."""
    ign = cfg.get("ignition") or {}
    iconf = ign.get("config") or {}
    merge = [r for r in iconf.get("merge") or [] if decode.source_scheme(r.get("source")) != "data"]
    replace = iconf.get("replace") or {}
    if decode.source_scheme(replace.get("source")) == "data":
        replace = {}
    new_iconf = dict(iconf)
    new_iconf.pop("merge", None)
    new_iconf.pop("replace", None)
    if merge:
        new_iconf["merge"] = merge
    if replace:
        new_iconf["replace"] = replace
    out = dict(cfg)
    new_ign = dict(ign)
    new_ign.pop("config", None)
    if new_iconf:
        new_ign["config"] = new_iconf
    out["ignition"] = new_ign
    return out


def render_merge(base: dict[str, Any], children: Sequence[Inline], *, base_name: str = "BASE",
                 loader: Loader = load_config, keep_references: bool = False,
                 check: bool = True) -> MergeResult:
    """The config Ignition applies when ``base`` lists ``children`` in ``ignition.config.merge``.

    ``base`` and ``children`` are loaded configs at :data:`OUTPUT_VERSION`. Data-URL
    references inside them are decoded and rendered too; remote ones are kept
    (with a warning). Unless ``keep_references``, the resolved data-URL references are
    removed from the result, so it can be used directly as a config. With ``check``
    the result must be valid, as Ignition requires.
    """
    r = _Renderer(loader)
    out = r.render(copy.deepcopy(base), base_name, extra=list(children))
    out = normalize(out)
    out.setdefault("ignition", {})["version"] = OUTPUT_VERSION
    if check:
        check_merged(out)
    if not keep_references:
        out = _drop_resolved_references(out)
    # version first, like every config
    out["ignition"] = {"version": OUTPUT_VERSION,
                       **{k: v for k, v in out["ignition"].items() if k != "version"}}
    return MergeResult(config=out, warnings=r.warnings)


def merge_bytes(base: bytes, children: Sequence[tuple[bytes, str]], *, base_name: str = "BASE",
                loader: Loader = load_config) -> MergeResult:
    """Load (validate + translate) raw inputs and render their merge."""
    base_cfg = loader(base, base_name)
    kids = [Inline(loader(raw, name), name) for raw, name in children]
    return render_merge(base_cfg, kids, base_name=base_name, loader=loader)
