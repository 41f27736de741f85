"""``ignition show``: an Ignition config decoded into what a person wants to read.

:func:`describe` turns a config into a structured document (the ``--json``
output): inline contents decoded (data URLs, base64, gzip), binary data
summarised as size + sha256, remote sources listed with their verification
hash (never fetched), SSH keys counted with their comments, and certificate
expiry warnings. :func:`render_text` prints that document with rich.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidConfigError
from . import certs, decode

TEXT_LIMIT = 64 * 1024  # longer text is summarised in the text view (full in --json)
SHOW_TEXT_MAX = 1 << 20  # contents larger than this are shown as size + sha256 only


@dataclass
class ShowReport:
    doc: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def describe_resource(res: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """One Resource: inline (decoded) or remote (reference only).

    Inline contents are decoded as a stream: size and sha256 of everything (at most
    :data:`decode.MAX_DECOMPRESSED`), the text itself only up to :data:`SHOW_TEXT_MAX`,
    so memory stays bounded whatever the config holds (a gzip bomb).
    """
    if not res:
        return None
    src = res.get("source")
    out: dict[str, Any] = {}
    comp = res.get("compression") or None
    verification = (res.get("verification") or {}).get("hash")
    if src is None:
        out["kind"] = "none"
    elif decode.source_scheme(src) == "data":
        size, digest, head = 0, hashlib.sha256(), bytearray()
        try:
            for chunk in decode.iter_contents(res, where=where) or ():
                size += len(chunk)
                digest.update(chunk)
                if len(head) <= SHOW_TEXT_MAX:
                    head += chunk[:SHOW_TEXT_MAX + 1 - len(head)]
        except InvalidConfigError as e:
            return {"kind": "undecodable", "error": e.message}
        out["kind"] = "inline"
        out["size"] = size
        out["sha256"] = digest.hexdigest()
        if size > SHOW_TEXT_MAX:
            out["large"] = True  # summarised: size and hash only
        elif _is_text(bytes(head)):
            out["text"] = head.decode("utf-8")
        else:
            out["binary"] = True
    else:
        out["kind"] = "remote"
        out["source"] = src
        out["scheme"] = decode.source_scheme(src)
    if comp:
        out["compression"] = comp
    if verification:
        out["verification"] = verification
    headers = res.get("httpHeaders")
    if headers:
        out["httpHeaders"] = [h.get("name") for h in headers]
    return out


def _owner(o: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"id": 0}`` / ``{"name": "core"}`` (both kept if both are set), or None."""
    if not o:
        return None
    return {k: o[k] for k in ("id", "name") if o.get(k) is not None} or None


def _mode(m: Any) -> str | None:
    return f"{m:04o}" if isinstance(m, int) and not isinstance(m, bool) else None


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def _key_comment(key: str) -> str:
    parts = key.split()
    # options? the key type is the first field that looks like one
    for i, p in enumerate(parts):
        if p.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(parts):
            return " ".join(parts[i + 2:])
    return ""


def describe_config(config: Mapping[str, Any], version: str) -> ShowReport:
    """Describe a decoded config (any 3.x; read in its own version's terms)."""
    warnings: list[str] = []
    ign = config.get("ignition") or {}
    iconf = ign.get("config") or {}
    storage = config.get("storage") or {}
    doc: dict[str, Any] = {"version": version}

    ignition: dict[str, Any] = {}
    ignition["merge"] = [describe_resource(r, f"ignition.config.merge[{i}]")
                         for i, r in enumerate(iconf.get("merge") or [])]
    replace = iconf.get("replace") or {}
    if replace.get("source") is not None:
        ignition["replace"] = describe_resource(replace, "ignition.config.replace")
    cas = ((ign.get("security") or {}).get("tls") or {}).get("certificateAuthorities") or []
    ca_docs = []
    for i, ca in enumerate(cas):
        d = describe_resource(ca, f"ignition.security.tls.certificateAuthorities[{i}]") or {}
        d.pop("text", None)  # the PEM itself is not what people read; certificates below are
        ca_docs.append(d)
    ignition["certificateAuthorities"] = ca_docs
    ignition["timeouts"] = ign.get("timeouts") or None
    ignition["proxy"] = ign.get("proxy") or None
    doc["ignition"] = _prune(ignition)

    files = []
    for i, f in enumerate(storage.get("files") or []):
        where = f"storage.files[{i}]"
        files.append(_prune({
            "path": f.get("path"), "mode": _mode(f.get("mode")), "overwrite": f.get("overwrite"),
            "user": _owner(f.get("user")), "group": _owner(f.get("group")),
            "contents": describe_resource(f.get("contents"), f"{where}.contents"),
            "append": [describe_resource(a, f"{where}.append[{j}]") for j, a in enumerate(f.get("append") or [])],
        }))
    doc["files"] = files
    doc["directories"] = [_prune({"path": d.get("path"), "mode": _mode(d.get("mode")),
                                  "overwrite": d.get("overwrite"), "user": _owner(d.get("user")),
                                  "group": _owner(d.get("group"))})
                          for d in storage.get("directories") or []]
    doc["links"] = [_prune({"path": ln.get("path"), "target": ln.get("target"), "hard": ln.get("hard"),
                            "overwrite": ln.get("overwrite"), "user": _owner(ln.get("user")),
                            "group": _owner(ln.get("group"))})
                    for ln in storage.get("links") or []]
    doc["units"] = [_prune({"name": u.get("name"), "enabled": u.get("enabled"), "mask": u.get("mask"),
                            "contents": u.get("contents"),
                            "dropins": [_prune({"name": d.get("name"), "contents": d.get("contents")})
                                        for d in u.get("dropins") or []]})
                    for u in (config.get("systemd") or {}).get("units") or []]
    users = []
    for u in (config.get("passwd") or {}).get("users") or []:
        keys = u.get("sshAuthorizedKeys") or []
        users.append(_prune({
            "name": u.get("name"), "uid": u.get("uid"), "groups": u.get("groups") or [],
            "primaryGroup": u.get("primaryGroup"), "homeDir": u.get("homeDir"), "shell": u.get("shell"),
            "system": u.get("system"), "shouldExist": u.get("shouldExist"),
            "passwordHash": "set" if u.get("passwordHash") else None,
            "sshKeys": len(keys), "sshKeyComments": [_key_comment(k) for k in keys],
        }))
    doc["users"] = users
    doc["groups"] = [_prune({"name": g.get("name"), "gid": g.get("gid"), "system": g.get("system"),
                             "shouldExist": g.get("shouldExist")})
                     for g in (config.get("passwd") or {}).get("groups") or []]
    doc["kernelArguments"] = _prune(dict(config.get("kernelArguments") or {}))
    luks_docs = []
    for i, lk in enumerate(storage.get("luks") or []):
        d = {k: v for k, v in lk.items() if k != "keyFile"}
        kf = lk.get("keyFile")
        if kf and kf.get("source") is not None:
            kd = describe_resource(kf, f"storage.luks[{i}].keyFile") or {}
            kd.pop("text", None)  # a key is a secret: size and hash only
            kd.pop("binary", None)
            d["keyFile"] = kd
        luks_docs.append(_prune(d))
    doc["luks"] = luks_docs
    doc["filesystems"] = [_prune(dict(fs)) for fs in storage.get("filesystems") or []]
    doc["raid"] = [_prune(dict(r)) for r in storage.get("raid") or []]
    doc["disks"] = [_prune(dict(d)) for d in storage.get("disks") or []]

    problems: list[str] = []
    found = certs.config_certificates(config, problems)
    doc["certificates"] = [c.to_dict() for c in found]
    warnings += [p for p in problems if "certificate" in p]  # decode errors are shown per resource
    warnings += certs.expiry_warnings(found)
    warnings += [r["error"] for r in _undecodable(doc)]
    for name, res in [("ignition.config.replace", replace),
                      *((f"ignition.config.merge[{i}]", r) for i, r in enumerate(iconf.get("merge") or []))]:
        if res and decode.is_remote(res.get("source")) and not (res.get("verification") or {}).get("hash"):
            warnings.append(f"{name}: remote config {res['source']} has no verification hash")
    doc = _prune(doc)
    doc.setdefault("version", version)
    doc["warnings"] = warnings
    return ShowReport(doc=doc, warnings=warnings)


def _undecodable(doc: Any, where: str = "") -> list[dict[str, str]]:
    """Resources in a described document that could not be decoded."""
    found: list[dict[str, str]] = []
    if isinstance(doc, dict):
        if doc.get("kind") == "undecodable":
            return [{"where": where or "config", "error": doc["error"]}]
        for k, v in doc.items():
            found += _undecodable(v, f"{where}.{k}" if where else k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _undecodable(v, f"{where}[{i}]")
    return found


def describe(raw: bytes, source: str = "<config>") -> ShowReport:
    """Parse and describe a config file's bytes. Validation errors become warnings."""
    from . import spec
    from .translate import parse_config, prune
    from .validate import validate_config

    version, config = parse_config(raw)
    report = validate_config(raw, source=source)
    if report.errors:  # show what can be read: values of the wrong type are left out
        config = prune(config, spec.CONFIG, version, well_typed=True)
    try:
        out = describe_config(config, str(version))
    except InvalidConfigError as e:
        raise InvalidConfigError(f"{source}: {e.message}") from None
    if report.errors:
        first = report.errors[0]
        note = (f"config is not valid ({len(report.errors)} error{'s' * (len(report.errors) > 1)}, "
                f"first: {first.message}); run: imagebuilder ignition validate {source}")
        out.warnings.insert(0, note)
    return out


# --------------------------------------------------------------------------- text output


def render_text(doc: Mapping[str, Any], console: Any) -> None:
    """Print a described config with rich (plain text when not a terminal)."""
    import json

    from rich.markup import escape

    def heading(title: str, n: int | None = None) -> None:
        console.print(f"\n[bold]{escape(title)}[/bold]" + (f" ({n})" if n is not None else ""))

    def line(text: str, indent: int = 2) -> None:
        console.print(" " * indent + text, soft_wrap=True, highlight=False)

    def body(text: str, indent: int = 6) -> None:
        if len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT] + f"\n… ({len(text) - TEXT_LIMIT} more characters; see --json)"
        for ln in text.rstrip("\n").split("\n") if text else []:
            console.print(" " * indent + ln, soft_wrap=True, highlight=False, markup=False)

    def fmt(v: Any) -> str:
        if isinstance(v, dict) and set(v) <= {"id", "name"}:  # an owner
            return " / ".join(f"{v[k]}" if k == "name" else f"id {v[k]}" for k in ("name", "id") if k in v)
        return str(v)

    def attrs(d: Mapping[str, Any], keys: list[str]) -> str:
        return ", ".join(f"{k} {fmt(d[k])}" if not isinstance(d[k], bool) else (k if d[k] else f"{k}=false")
                         for k in keys if k in d)

    def resource_summary(r: Mapping[str, Any] | None) -> str:
        if not r:
            return "no contents"
        if r["kind"] == "remote":
            s = f"remote {r['source']} (not fetched)"
            s += f", verification {r['verification']}" if r.get("verification") else ", no verification hash"
            if r.get("compression"):
                s += f", {r['compression']}"
            return s
        if r["kind"] == "none":
            return "no source"
        if r["kind"] == "undecodable":
            return f"cannot decode: {r['error']}"
        s = f"{r['size']} bytes"
        if r.get("compression"):
            s += f", {r['compression']}"
        if r.get("binary"):
            s += f", binary, sha256 {r['sha256']}"
        elif r.get("large"):
            s += f", larger than {SHOW_TEXT_MAX >> 20} MiB (not shown), sha256 {r['sha256']}"
        return s

    console.print(f"[bold]Ignition config[/bold] spec {escape(doc.get('version', '?'))}")
    ign = doc.get("ignition") or {}
    for i, r in enumerate(ign.get("merge") or []):
        line(f"merge[{i}]: {escape(resource_summary(r))}")
    if ign.get("replace"):
        line(f"replace: {escape(resource_summary(ign['replace']))}")
    if ign.get("timeouts"):
        line("timeouts: " + escape(attrs(ign["timeouts"], list(ign["timeouts"]))))
    if ign.get("proxy"):
        line("proxy: " + escape(", ".join(
            f"{k}={' '.join(v) if isinstance(v, list) else v}" for k, v in ign["proxy"].items())))
    for i, r in enumerate(ign.get("certificateAuthorities") or []):
        line(f"CA[{i}]: {escape(resource_summary(r))}")
    for c in doc.get("certificates") or []:
        line(f"certificate {escape(c['subject'])} in {escape(c['where'])}: valid "
             f"{c['notBefore'][:19]} … {c['notAfter'][:19]}")

    if doc.get("files"):
        heading("Files", len(doc["files"]))
        for f in doc["files"]:
            meta = attrs(f, ["mode", "user", "group", "overwrite"])
            line(f"[cyan]{escape(str(f.get('path', '(no path)')))}[/cyan]" + (f"  ({escape(meta)})" if meta else ""))
            c = f.get("contents")
            line(escape(resource_summary(c)), 4)
            if c and "text" in c:
                body(c["text"])
            for j, a in enumerate(f.get("append") or []):
                line(f"append[{j}]: {escape(resource_summary(a))}", 4)
                if a and "text" in a:
                    body(a["text"])
    if doc.get("directories"):
        heading("Directories", len(doc["directories"]))
        for d in doc["directories"]:
            meta = attrs(d, ["mode", "user", "group", "overwrite"])
            line(f"[cyan]{escape(str(d.get('path', '(no path)')))}[/cyan]" + (f"  ({escape(meta)})" if meta else ""))
    if doc.get("links"):
        heading("Links", len(doc["links"]))
        for ln in doc["links"]:
            kind = "hard link" if ln.get("hard") else "symlink"
            meta = attrs(ln, ["user", "group", "overwrite"])
            line(f"[cyan]{escape(str(ln.get('path', '(no path)')))}[/cyan] -> {escape(str(ln.get('target')))} ({kind}"
                 + (f", {escape(meta)}" if meta else "") + ")")
    if doc.get("units"):
        heading("Systemd units", len(doc["units"]))
        for u in doc["units"]:
            state = attrs(u, ["enabled", "mask"])
            line(f"[cyan]{escape(str(u.get('name', '(no name)')))}[/cyan]" + (f"  ({escape(state)})" if state else ""))
            if "contents" in u:
                body(u["contents"])
            for d in u.get("dropins") or []:
                line(f"drop-in {escape(str(d.get('name', '(no name)')))}", 4)
                if "contents" in d:
                    body(d["contents"], 8)
    if doc.get("users"):
        heading("Users", len(doc["users"]))
        for u in doc["users"]:
            bits = []
            if u.get("groups"):
                bits.append("groups " + ", ".join(u["groups"]))
            keys = f"{u.get('sshKeys', 0)} SSH key{'s' if u.get('sshKeys', 0) != 1 else ''}"
            comments = [c for c in u.get("sshKeyComments") or [] if c]
            if comments:
                keys += " (" + ", ".join(comments) + ")"
            bits.append(keys)
            for k in ("uid", "shell", "homeDir", "primaryGroup"):
                if k in u:
                    bits.append(f"{k} {u[k]}")
            if u.get("passwordHash"):
                bits.append("password set")
            if u.get("shouldExist") is False:
                bits.append("to be deleted")
            line(f"[cyan]{escape(str(u.get('name', '(no name)')))}[/cyan]: " + escape(", ".join(bits)))
    if doc.get("groups"):
        heading("Groups", len(doc["groups"]))
        for g in doc["groups"]:
            meta = attrs(g, ["gid", "system", "shouldExist"])
            line(f"[cyan]{escape(str(g.get('name', '(no name)')))}[/cyan]" + (f"  ({escape(meta)})" if meta else ""))
    kargs = doc.get("kernelArguments") or {}
    if kargs:
        heading("Kernel arguments")
        if kargs.get("shouldExist"):
            line("should exist: " + escape(" ".join(kargs["shouldExist"])))
        if kargs.get("shouldNotExist"):
            line("should not exist: " + escape(" ".join(kargs["shouldNotExist"])))
    for title, key, name_key in (("Disks", "disks", "device"), ("RAID", "raid", "name"),
                                 ("LUKS devices", "luks", "name"), ("Filesystems", "filesystems", "device")):
        items = doc.get(key) or []
        if not items:
            continue
        heading(title, len(items))
        for it in items:
            rest = {k: v for k, v in it.items() if k != name_key}
            line(f"[cyan]{escape(str(it.get(name_key)))}[/cyan]")
            for k, v in rest.items():
                if k == "keyFile":
                    v = resource_summary(v) + (f", sha256 {v['sha256']}" if v.get("sha256") else "")
                elif k == "partitions":
                    for p in v:
                        line(escape("partition " + ", ".join(f"{pk}={pv}" for pk, pv in p.items())), 4)
                    continue
                if isinstance(v, list):
                    v = " ".join(str(x) for x in v)
                elif isinstance(v, dict):
                    v = json.dumps(v, separators=(", ", ": "))
                line(f"{escape(k)}: {escape(str(v))}", 4)
    if not any(doc.get(k) for k in ("files", "directories", "links", "units", "users", "groups",
                                    "kernelArguments", "disks", "raid", "luks", "filesystems")):
        console.print("\n(the config changes nothing on the system)")
