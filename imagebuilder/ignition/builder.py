"""A small typed builder for Ignition configs (used by the ISO customizer and disk builder).

>>> b = ConfigBuilder("3.3.0")
>>> b.add_file("/etc/hostname", b"node1\\n", mode=0o644)
>>> b.add_unit("hello.service", "[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n", enabled=True)
>>> cfg = b.to_json()

Output is deterministic: inline data as data URLs, gzip with mtime 0, keys in
spec order, entries in insertion order. Contents always carry an explicit
``compression`` (``""`` when uncompressed, as Butane does) so a later merge
cannot make them inherit a parent's ``gzip``.
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import InvalidConfigError
from . import decode

SUPPORTED = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0")

Owner = int | str | None


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def _owner(value: Owner) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidConfigError("owner must be a user/group name or numeric id")
    return {"id": value} if isinstance(value, int) else {"name": value}


class ConfigBuilder:
    """Accumulates files, units, users, … and renders an Ignition config."""

    def __init__(self, version: str = "3.3.0"):
        if version not in SUPPORTED:
            raise InvalidConfigError(f"unsupported Ignition spec version {version!r} "
                                     f"(supported: {', '.join(SUPPORTED)})")
        self.version = version
        self._nodes: dict[str, tuple[str, dict[str, Any]]] = {}  # path -> (kind, entry)
        self._units: dict[str, dict[str, Any]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._cas: list[dict[str, Any]] = []
        self._merge: list[dict[str, Any]] = []
        self._kargs: dict[str, list[str]] = {"shouldExist": [], "shouldNotExist": []}

    # -- helpers

    def _need(self, minor: int, what: str) -> None:
        if _minor(self.version) < minor:
            raise InvalidConfigError(f"{what} needs Ignition spec 3.{minor}.0 or newer "
                                     f"(this config is {self.version})")

    def _check_path(self, path: str, what: str) -> None:
        if not path.startswith("/"):
            raise InvalidConfigError(f"{what} path {path!r} is not absolute")
        if posixpath.normpath(path) != path or path.startswith("//"):
            raise InvalidConfigError(f"{what} path {path!r} is not fully simplified")
        if path in self._nodes:
            raise InvalidConfigError(f"{what} path {path!r} is already used by a {self._nodes[path][0]}")

    def _contents(self, data: bytes, compress: str | None, *, field_has_compression: bool) -> dict[str, Any]:
        if compress not in (None, "gzip"):
            raise InvalidConfigError(f"unsupported compression {compress!r} (use None or 'gzip')")
        if compress == "gzip":
            self._need(1, "gzip compression")
            return {"source": decode.encode_data_url(decode.gzip_bytes(data), base64_=True),
                    "compression": "gzip"}
        res: dict[str, Any] = {"source": decode.encode_data_url(data)}
        if field_has_compression:
            res["compression"] = ""
        return res

    # -- storage

    def add_file(self, path: str, data: bytes, mode: int = 0o644, overwrite: bool = True,
                 compress: str | None = None, user: Owner = None, group: Owner = None) -> None:
        """A file with inline contents (a data URL; ``compress="gzip"`` stores it gzipped)."""
        self._check_path(path, "file")
        _check_mode(mode)
        entry: dict[str, Any] = {"path": path, "overwrite": overwrite,
                                 "contents": self._contents(bytes(data), compress, field_has_compression=True),
                                 "mode": mode}
        _set_owner(entry, user, group)
        self._nodes[path] = ("file", entry)

    def add_directory(self, path: str, mode: int = 0o755, overwrite: bool = False,
                      user: Owner = None, group: Owner = None) -> None:
        self._check_path(path, "directory")
        _check_mode(mode)
        entry: dict[str, Any] = {"path": path, "overwrite": overwrite, "mode": mode}
        _set_owner(entry, user, group)
        self._nodes[path] = ("directory", entry)

    def add_link(self, path: str, target: str, hard: bool = False, overwrite: bool = True,
                 user: Owner = None, group: Owner = None) -> None:
        self._check_path(path, "link")
        if not target:
            raise InvalidConfigError(f"link {path!r} needs a target")
        entry: dict[str, Any] = {"path": path, "overwrite": overwrite, "target": target, "hard": hard}
        _set_owner(entry, user, group)
        self._nodes[path] = ("link", entry)

    # -- systemd

    def add_unit(self, name: str, contents: str | None = None, enabled: bool | None = None,
                 mask: bool | None = None,
                 dropins: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        """A systemd unit; ``dropins`` maps drop-in names (``*.conf``) to contents."""
        if name in self._units:
            raise InvalidConfigError(f"unit {name!r} is already defined")
        if "." not in name:
            raise InvalidConfigError(f"unit name {name!r} has no type suffix (e.g. .service)")
        unit: dict[str, Any] = {"name": name}
        if enabled is not None:
            unit["enabled"] = enabled
        if mask is not None:
            unit["mask"] = mask
        if contents is not None:
            unit["contents"] = contents
        items = list(dropins.items()) if isinstance(dropins, Mapping) else list(dropins)
        seen: set[str] = set()
        for dname, dcontents in items:
            if not dname.endswith(".conf"):
                raise InvalidConfigError(f"unit {name!r}: drop-in name {dname!r} must end in .conf")
            if dname in seen:
                raise InvalidConfigError(f"unit {name!r}: drop-in {dname!r} given twice")
            seen.add(dname)
            unit.setdefault("dropins", []).append({"name": dname, "contents": dcontents})
        self._units[name] = unit

    # -- passwd

    def add_user(self, name: str, ssh_keys: Sequence[str] = (), groups: Sequence[str] = (),
                 password_hash: str | None = None, uid: int | None = None) -> None:
        """A user; adding the same name again adds keys and groups to it."""
        user = self._users.setdefault(name, {"name": name})
        for field_name, values in (("sshAuthorizedKeys", ssh_keys), ("groups", groups)):
            if isinstance(values, str):
                raise InvalidConfigError(f"user {name!r}: {field_name} must be a list, not a string")
            lst = user.setdefault(field_name, [])
            for v in values:
                if v not in lst:
                    lst.append(v)
        if password_hash is not None:
            user["passwordHash"] = password_hash
        if uid is not None:
            user["uid"] = uid

    def add_group(self, name: str, gid: int | None = None, system: bool | None = None) -> None:
        if name in self._groups:
            raise InvalidConfigError(f"group {name!r} is already defined")
        g: dict[str, Any] = {"name": name}
        if gid is not None:
            g["gid"] = gid
        if system is not None:
            g["system"] = system
        self._groups[name] = g

    # -- ignition section

    def add_ca(self, pem_bytes: bytes) -> None:
        """A certificate authority bundle (PEM) for https fetches, as an inline data URL."""
        from .certs import parse_pem_bundle

        if not parse_pem_bundle(bytes(pem_bytes), "CA bundle"):
            raise InvalidConfigError("CA bundle holds no PEM certificate")
        res = self._contents(bytes(pem_bytes), None, field_has_compression=_minor(self.version) >= 1)
        if any(c["source"] == res["source"] for c in self._cas):
            return  # same bundle twice: Ignition keys CAs by source
        self._cas.append(res)

    def merge_config(self, child_bytes: bytes) -> None:
        """Append a child config to ``ignition.config.merge`` (gzip + base64 data URL,
        as coreos-installer embeds configs). The child must be a JSON object."""
        try:
            child = json.loads(child_bytes)
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidConfigError(f"child config is not valid JSON: {e}") from None
        if not isinstance(child, dict):
            raise InvalidConfigError("child config must be a JSON object")
        if _minor(self.version) >= 1:
            ref = {"source": "data:;base64," + base64.b64encode(decode.gzip_bytes(bytes(child_bytes))).decode(),
                   "compression": "gzip"}
        else:  # 3.0.0 has no compression for config references
            ref = {"source": decode.encode_data_url(bytes(child_bytes), base64_=True)}
        self._merge.append(ref)

    def add_kernel_args(self, should_exist: Sequence[str] = (), should_not_exist: Sequence[str] = ()) -> None:
        self._need(3, "kernelArguments")
        for key, values in (("shouldExist", should_exist), ("shouldNotExist", should_not_exist)):
            if isinstance(values, str):
                raise InvalidConfigError(f"kernelArguments.{key} must be a list, not a string")
            other = self._kargs["shouldNotExist" if key == "shouldExist" else "shouldExist"]
            for v in values:
                if v in other:
                    raise InvalidConfigError(f"kernel argument {v!r} cannot both exist and not exist")
                if v not in self._kargs[key]:
                    self._kargs[key].append(v)

    # -- output

    def to_dict(self) -> dict[str, Any]:
        """The config as a dict (spec key order; empty sections left out)."""
        from .merge import normalize

        nodes = {"file": [], "directory": [], "link": []}  # type: dict[str, list[dict[str, Any]]]
        for kind, entry in self._nodes.values():
            nodes[kind].append(entry)
        cfg: dict[str, Any] = {
            "ignition": {"version": self.version,
                         "config": {"merge": self._merge},
                         "security": {"tls": {"certificateAuthorities": self._cas}}},
            "storage": {"files": nodes["file"], "directories": nodes["directory"], "links": nodes["link"]},
            "systemd": {"units": list(self._units.values())},
            "passwd": {"users": list(self._users.values()), "groups": list(self._groups.values())},
            "kernelArguments": self._kargs,
        }
        out = normalize(cfg)
        out.setdefault("ignition", {})["version"] = self.version
        out["ignition"] = {"version": self.version,
                           **{k: v for k, v in out["ignition"].items() if k != "version"}}
        return out

    def to_json(self, pretty: bool = False) -> bytes:
        """Deterministic JSON bytes (compact, or indented with a final newline)."""
        if pretty:
            return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def _check_mode(mode: int) -> None:
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise InvalidConfigError(f"illegal file mode {mode!r} (expected 0..0o7777)")


def _set_owner(entry: dict[str, Any], user: Owner, group: Owner) -> None:
    u, g = _owner(user), _owner(group)
    if u:
        entry["user"] = u
    if g:
        entry["group"] = g
