"""Translate a subset of nmstate's declarative YAML/JSON into NetworkManager keyfiles.

coreos-installer's ``--network-nmstate`` runs the nmstate library's ``gen_conf()``;
nmstate is not packaged for Debian 12, so imagebuilder translates the common subset
itself. The output follows nmstate's keyfile layout: one ``<name>.nmconnection`` per
interface, sections in nmstate's order (connection, bond, bridge, ipv4, ipv6, ethernet,
vlan), keys sorted inside a section, empty values left out. Connection uuids are
uuid5 of the connection name, so the same input always gives the same bytes.

Supported (anything else raises :class:`UserInputError` naming the key and its path):

* ``interfaces[]``: ``name``, ``type`` (ethernet, bond, vlan, linux-bridge),
  ``state: up``, ``mtu``, ``mac-address``, ``ipv4``/``ipv6``,
  ``link-aggregation`` (mode, options, port), ``vlan`` (base-iface, id),
  ``bridge`` (options.stp, port[].name)
* ``ipv4``/``ipv6``: ``enabled``, ``dhcp``, ``autoconf`` (v6), ``address[]``
  (``ip``, ``prefix-length``), ``auto-dns``, ``auto-gateway``, ``auto-routes``,
  ``addr-gen-mode`` (v6)
* ``dns-resolver.config``: ``server[]``, ``search[]``
* ``routes.config[]``: ``destination``, ``next-hop-address``, ``next-hop-interface``,
  ``metric``
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserInputError

# A fixed namespace so uuid5(name) is stable across runs and machines.
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "imagebuilder:nmstate-keyfile")

SUPPORTED_TYPES = ("ethernet", "bond", "vlan", "linux-bridge")
NM_TYPE = {"ethernet": "ethernet", "bond": "bond", "vlan": "vlan", "linux-bridge": "bridge"}
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")
# nmstate section order (gen_conf/conn.rs): connection, bond, bridge, ipv4, ipv6, ethernet, vlan
SECTION_ORDER = ("connection", "bond", "bridge", "bridge-port", "ipv4", "ipv6", "ethernet", "vlan")
IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def _unsupported(path: str, value: Any, what: str, supported: Sequence[str]) -> UserInputError:
    return UserInputError(
        f"{path}: {value!r} is not supported by imagebuilder's nmstate translator "
        f"(supported {what}: {', '.join(supported)})"
    )


def _check_keys(obj: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise UserInputError(
                f"{where}: key {key!r} is not supported by imagebuilder's nmstate translator "
                f"(supported keys here: {', '.join(allowed)})"
            )


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UserInputError(f"{path}: expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise UserInputError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _bool(value: Any, path: str) -> bool:
    """nmstate accepts booleans and their string spellings ("true", "yes", "1"...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "y", "on", "1"):
            return True
        if low in ("false", "no", "n", "off", "0"):
            return False
    raise UserInputError(f"{path}: expected a boolean, got {value!r}")


def _int(value: Any, path: str, *, lo: int = 0, hi: int = 2**32 - 1) -> int:
    if isinstance(value, bool):
        raise UserInputError(f"{path}: expected an integer, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        raise UserInputError(f"{path}: expected an integer, got {value!r}")
    if not lo <= n <= hi:
        raise UserInputError(f"{path}: {n} is out of range {lo}..{hi}")
    return n


def _str(value: Any, path: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list)):
        raise UserInputError(f"{path}: expected a string, got {value!r}")
    return str(value)


def _ifname(value: Any, path: str) -> str:
    name = _str(value, path)
    if not IFNAME_RE.match(name) or name in (".", ".."):
        raise UserInputError(
            f"{path}: invalid interface name {name!r} (1-15 characters, no '/', ':' or spaces)")
    return name


def _kf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(_kf_value(v) for v in value)
    return str(value)


@dataclass
class _Conn:
    """One NetworkManager connection profile being assembled."""

    name: str
    nm_type: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    declared: bool = True  # False for ports nmstate implies (undeclared => ethernet)
    controller: str | None = None
    v4_enabled: bool = False
    v6_enabled: bool = False
    n_routes: dict[int, int] = field(default_factory=lambda: {4: 0, 6: 0})

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.setdefault(name, {})

    def render(self) -> str:
        conn = self.section("connection")
        conn.update({
            "id": self.name,
            "uuid": str(uuid.uuid5(UUID_NAMESPACE, self.name)),
            "type": self.nm_type,
            "interface-name": self.name,
            "autoconnect": True,
        })
        out: list[str] = []
        for sec in sorted(self.sections, key=SECTION_ORDER.index):
            out.append(f"[{sec}]")
            data = self.sections[sec]
            for key in sorted(data):
                text = _kf_value(data[key])
                if text != "":
                    out.append(f"{key}={text}")
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n"


def _ip_section(conn: _Conn, ip: Any, family: int, path: str) -> None:
    sec_name = f"ipv{family}"
    if ip is None:
        conn.section(sec_name)["method"] = "disabled"
        return
    ip = _mapping(ip, path)
    allowed = ["enabled", "dhcp", "address", "auto-dns", "auto-gateway", "auto-routes"]
    if family == 6:
        allowed += ["autoconf", "addr-gen-mode"]
    _check_keys(ip, path, allowed)
    sec = conn.section(sec_name)
    enabled = _bool(ip.get("enabled", False), f"{path}.enabled")
    if not enabled:
        for key in ip:
            if key != "enabled" and ip[key] not in (False, None, [], "false"):
                raise UserInputError(f"{path}.{key}: set while {path}.enabled is false")
        sec["method"] = "disabled"
        return
    dhcp = _bool(ip.get("dhcp", False), f"{path}.dhcp")
    autoconf = _bool(ip.get("autoconf", False), f"{path}.autoconf") if family == 6 else False
    addresses = []
    for i, a in enumerate(_list(ip.get("address", []), f"{path}.address")):
        apath = f"{path}.address[{i}]"
        a = _mapping(a, apath)
        _check_keys(a, apath, ["ip", "prefix-length"])
        if "ip" not in a or "prefix-length" not in a:
            raise UserInputError(f"{apath}: needs both 'ip' and 'prefix-length'")
        try:
            addr = ipaddress.ip_address(_str(a["ip"], f"{apath}.ip"))
        except ValueError:
            raise UserInputError(f"{apath}.ip: {a['ip']!r} is not an IP address") from None
        if addr.version != family:
            raise UserInputError(f"{apath}.ip: {addr} is not an IPv{family} address")
        plen = _int(a["prefix-length"], f"{apath}.prefix-length", hi=32 if family == 4 else 128)
        addresses.append(f"{addr}/{plen}")
    if family == 4:
        method = "auto" if dhcp else ("manual" if addresses else "disabled")
    elif autoconf:
        method = "auto"
    elif dhcp:
        method = "dhcp"
    else:
        method = "manual" if addresses else "link-local"
    sec["method"] = method
    for i, text in enumerate(addresses, start=1):
        sec[f"address{i}"] = text
    auto = dhcp or autoconf
    for key, nm_key in (("auto-dns", "ignore-auto-dns"), ("auto-routes", "ignore-auto-routes"),
                        ("auto-gateway", "never-default")):
        if key in ip:
            if not auto:
                raise UserInputError(f"{path}.{key}: only meaningful with dhcp"
                                     + (" or autoconf" if family == 6 else ""))
            if not _bool(ip[key], f"{path}.{key}"):
                sec[nm_key] = True
    if "addr-gen-mode" in ip:
        mode = _str(ip["addr-gen-mode"], f"{path}.addr-gen-mode")
        if mode not in ("eui64", "stable-privacy"):
            raise _unsupported(f"{path}.addr-gen-mode", mode, "values", ["eui64", "stable-privacy"])
        sec["addr-gen-mode"] = mode
    if family == 4:
        conn.v4_enabled = method != "disabled"
    else:
        conn.v6_enabled = True


def _bond(conn: _Conn, la: Any, path: str) -> list[str]:
    la = _mapping(la, path)
    _check_keys(la, path, ["mode", "options", "port", "ports", "slaves"])
    if "mode" not in la:
        raise UserInputError(f"{path}.mode: a bond needs a mode (one of {', '.join(BOND_MODES)})")
    mode = _str(la["mode"], f"{path}.mode")
    if mode not in BOND_MODES:
        raise _unsupported(f"{path}.mode", mode, "modes", BOND_MODES)
    sec = conn.section("bond")
    sec["mode"] = mode
    opts = _mapping(la.get("options", {}) or {}, f"{path}.options")
    for key, value in opts.items():
        opath = f"{path}.options.{key}"
        if isinstance(value, (Mapping, list)) or value is None:
            raise UserInputError(f"{opath}: bond options must be scalars")
        if key == "mode":
            raise UserInputError(f"{opath}: set the bond mode with {path}.mode")
        sec[str(key)] = value
    ports: list[str] = []
    for key in ("port", "ports", "slaves"):
        if key in la:
            for i, p in enumerate(_list(la[key] or [], f"{path}.{key}")):
                ports.append(_ifname(p, f"{path}.{key}[{i}]"))
    return ports


def _bridge(conn: _Conn, br: Any, path: str) -> list[str]:
    br = _mapping(br, path)
    _check_keys(br, path, ["options", "port"])
    sec = conn.section("bridge")
    sec["stp"] = False  # nmstate's default for a new linux-bridge without stp options
    opts = _mapping(br.get("options", {}) or {}, f"{path}.options")
    _check_keys(opts, f"{path}.options", ["stp"])
    if "stp" in opts:
        spath = f"{path}.options.stp"
        stp = _mapping(opts["stp"], spath)
        _check_keys(stp, spath, ["enabled", "priority", "forward-delay", "hello-time", "max-age"])
        if "enabled" in stp:
            sec["stp"] = _bool(stp["enabled"], f"{spath}.enabled")
        for key, hi in (("priority", 65535), ("forward-delay", 30), ("hello-time", 10),
                        ("max-age", 40)):
            if key in stp:
                sec[key] = _int(stp[key], f"{spath}.{key}", hi=hi)
    ports: list[str] = []
    for i, p in enumerate(_list(br.get("port", []) or [], f"{path}.port")):
        ppath = f"{path}.port[{i}]"
        p = _mapping(p, ppath)
        _check_keys(p, ppath, ["name"])
        if "name" not in p:
            raise UserInputError(f"{ppath}: a bridge port needs a name")
        ports.append(_ifname(p["name"], f"{ppath}.name"))
    return ports


def _vlan(conn: _Conn, vlan: Any, path: str) -> str:
    vlan = _mapping(vlan, path)
    _check_keys(vlan, path, ["base-iface", "id"])
    if "base-iface" not in vlan or "id" not in vlan:
        raise UserInputError(f"{path}: a vlan needs 'base-iface' and 'id'")
    base = _ifname(vlan["base-iface"], f"{path}.base-iface")
    sec = conn.section("vlan")
    sec["id"] = _int(vlan["id"], f"{path}.id", hi=4094)
    sec["parent"] = base
    return base


def translate(state: Any, *, source: str = "nmstate") -> list[tuple[str, str]]:
    """Translate a parsed nmstate document into ``[(filename, keyfile text), ...]``.

    ``source`` prefixes error messages (usually the input file name).
    """
    try:
        return _translate(state)
    except UserInputError as e:
        raise UserInputError(f"{source}: {e.message}", hint=e.hint) from None


def _translate(state: Any) -> list[tuple[str, str]]:
    if state is None:
        return []
    state = _mapping(state, "(top level)")
    _check_keys(state, "", ["interfaces", "dns-resolver", "routes"])
    conns: dict[str, _Conn] = {}
    order: list[str] = []
    ports_of: dict[str, tuple[str, str, str]] = {}  # port -> (controller, slave-type, path)
    pending_ip: dict[str, tuple[Any, Any, str]] = {}  # name -> (ipv4, ipv6, path)

    for i, iface in enumerate(_list(state.get("interfaces", []) or [], "interfaces")):
        path = f"interfaces[{i}]"
        iface = _mapping(iface, path)
        _check_keys(iface, path, ["name", "type", "state", "mtu", "mac-address", "ipv4", "ipv6",
                                  "link-aggregation", "vlan", "bridge"])
        if "name" not in iface:
            raise UserInputError(f"{path}.name: every interface needs a name")
        name = _ifname(iface["name"], f"{path}.name")
        if name in conns:
            raise UserInputError(f"{path}.name: interface {name!r} is listed twice")
        itype = _str(iface.get("type", "ethernet"), f"{path}.type")
        if itype not in SUPPORTED_TYPES:
            raise _unsupported(f"{path}.type", itype, "types", SUPPORTED_TYPES)
        st = _str(iface.get("state", "up"), f"{path}.state")
        if st != "up":
            raise _unsupported(f"{path}.state", st, "states", ["up"])
        conn = _Conn(name=name, nm_type=NM_TYPE[itype])
        conns[name] = conn
        order.append(name)
        if itype == "ethernet":
            conn.section("ethernet")
        for key, section_key in (("mtu", "mtu"), ("mac-address", "mac-address")):
            if key in iface:
                if key == "mtu":
                    value: Any = _int(iface[key], f"{path}.mtu", lo=68, hi=65535)
                else:
                    value = _str(iface[key], f"{path}.mac-address")
                    if not MAC_RE.match(value):
                        raise UserInputError(f"{path}.mac-address: {value!r} is not a MAC address")
                    value = value.upper()
                conn.section("ethernet")[section_key] = value
        for key, kind in (("link-aggregation", "bond"), ("bridge", "linux-bridge"),
                          ("vlan", "vlan")):
            if key in iface and itype != kind:
                raise UserInputError(f"{path}.{key}: only valid for type {kind}, not {itype}")
        ports: list[str] = []
        if itype == "bond":
            if "link-aggregation" not in iface:
                raise UserInputError(f"{path}.link-aggregation: a bond needs link-aggregation.mode")
            ports = _bond(conn, iface["link-aggregation"], f"{path}.link-aggregation")
            conn.section("connection")["autoconnect-slaves"] = 1
        elif itype == "linux-bridge":
            ports = _bridge(conn, iface.get("bridge", {}) or {}, f"{path}.bridge")
            conn.section("connection")["autoconnect-slaves"] = 1
        elif itype == "vlan":
            if "vlan" not in iface:
                raise UserInputError(f"{path}.vlan: a vlan needs base-iface and id")
            # an undeclared base-iface is an existing device: nothing to write for it
            _vlan(conn, iface["vlan"], f"{path}.vlan")
        for port in ports:
            if port in ports_of:
                raise UserInputError(
                    f"{path}: port {port!r} is already a port of {ports_of[port][0]!r}")
            if port == name:
                raise UserInputError(f"{path}: {name!r} cannot be a port of itself")
            ports_of[port] = (name, "bond" if itype == "bond" else "bridge", path)
        # IP settings are filled after ports are known (ports carry no IP config)
        pending_ip[name] = (iface.get("ipv4"), iface.get("ipv6"), path)

    # ports that were never declared are ethernet, as nmstate assumes
    for port, (ctrl, _kind, _path) in ports_of.items():
        if port not in conns:
            conn = _Conn(name=port, nm_type="ethernet", declared=False)
            conn.section("ethernet")
            conns[port] = conn
            order.append(port)
    for port, (ctrl, kind, cpath) in ports_of.items():
        conn = conns[port]
        if conn.nm_type not in ("ethernet", "bond", "vlan"):
            raise UserInputError(f"{cpath}: {port!r} ({conn.nm_type}) cannot be a {kind} port")
        conn.controller = ctrl
        sec = conn.section("connection")
        sec["master"] = ctrl
        sec["slave-type"] = kind

    for name in order:
        conn = conns[name]
        if name not in pending_ip:
            continue
        ipv4, ipv6, path = pending_ip[name]
        if conn.controller is not None:
            for fam, ip in (("ipv4", ipv4), ("ipv6", ipv6)):
                if ip is not None and _bool(_mapping(ip, f"{path}.{fam}").get("enabled", False),
                                            f"{path}.{fam}.enabled"):
                    raise UserInputError(f"{path}.{fam}: {name!r} is a port of "
                                         f"{conn.controller!r} and cannot have IP enabled")
            continue
        _ip_section(conn, ipv4, 4, f"{path}.ipv4")
        _ip_section(conn, ipv6, 6, f"{path}.ipv6")

    _routes(state.get("routes"), conns, order)
    _dns(state.get("dns-resolver"), conns, order)
    return [(f"{name}.nmconnection", conns[name].render()) for name in order]


def _routes(routes: Any, conns: dict[str, _Conn], order: list[str]) -> None:
    if routes is None:
        return
    routes = _mapping(routes, "routes")
    _check_keys(routes, "routes", ["config"])
    for i, r in enumerate(_list(routes.get("config", []) or [], "routes.config")):
        path = f"routes.config[{i}]"
        r = _mapping(r, path)
        _check_keys(r, path, ["destination", "next-hop-address", "next-hop-interface", "metric"])
        if "destination" not in r or "next-hop-interface" not in r:
            raise UserInputError(f"{path}: a route needs 'destination' and 'next-hop-interface'")
        try:
            dest = ipaddress.ip_network(_str(r["destination"], f"{path}.destination"), strict=False)
        except ValueError:
            raise UserInputError(f"{path}.destination: {r['destination']!r} is not a network") from None
        fam = dest.version
        ifname = _ifname(r["next-hop-interface"], f"{path}.next-hop-interface")
        if ifname not in conns:
            raise UserInputError(
                f"{path}.next-hop-interface: {ifname!r} is not one of the interfaces in this file")
        conn = conns[ifname]
        if not (conn.v4_enabled if fam == 4 else conn.v6_enabled):
            raise UserInputError(
                f"{path}: IPv{fam} route via {ifname!r}, which has IPv{fam} disabled")
        gw = "0.0.0.0" if fam == 4 else "::"
        if "next-hop-address" in r:
            try:
                nh = ipaddress.ip_address(_str(r["next-hop-address"], f"{path}.next-hop-address"))
            except ValueError:
                raise UserInputError(
                    f"{path}.next-hop-address: {r['next-hop-address']!r} is not an IP address") from None
            if nh.version != fam:
                raise UserInputError(f"{path}.next-hop-address: {nh} is not IPv{fam} like {dest}")
            gw = str(nh)
        text = f"{dest.network_address}/{dest.prefixlen},{gw}"
        if "metric" in r:
            text += f",{_int(r['metric'], f'{path}.metric')}"
        conn.n_routes[fam] += 1
        conn.section(f"ipv{fam}")[f"route{conn.n_routes[fam]}"] = text


def _dns(dns: Any, conns: dict[str, _Conn], order: list[str]) -> None:
    """Put static DNS on one interface per family, as nmstate does.

    The interface carrying the default route of that family is preferred, then the
    first interface with that family enabled.
    """
    if dns is None:
        return
    dns = _mapping(dns, "dns-resolver")
    _check_keys(dns, "dns-resolver", ["config"])
    cfg = _mapping(dns.get("config", {}) or {}, "dns-resolver.config")
    _check_keys(cfg, "dns-resolver.config", ["server", "search"])
    servers: dict[int, list[str]] = {4: [], 6: []}
    for i, s in enumerate(_list(cfg.get("server", []) or [], "dns-resolver.config.server")):
        try:
            addr = ipaddress.ip_address(_str(s, f"dns-resolver.config.server[{i}]"))
        except ValueError:
            raise UserInputError(
                f"dns-resolver.config.server[{i}]: {s!r} is not an IP address") from None
        servers[addr.version].append(str(addr))
    search = [_str(s, f"dns-resolver.config.search[{i}]")
              for i, s in enumerate(_list(cfg.get("search", []) or [], "dns-resolver.config.search"))]

    def pick(fam: int) -> _Conn | None:
        default = "0.0.0.0/0" if fam == 4 else "::/0"
        for name in order:
            sec = conns[name].sections.get(f"ipv{fam}", {})
            if any(k.startswith("route") and str(v).startswith(default + ",")
                   for k, v in sec.items()):
                return conns[name]
        for name in order:
            c = conns[name]
            if c.controller is None and (c.v4_enabled if fam == 4 else c.v6_enabled):
                return c
        return None

    targets: list[tuple[_Conn, int]] = []
    for fam in (4, 6):
        if not servers[fam]:
            continue
        conn = pick(fam)
        if conn is None:
            raise UserInputError(
                f"dns-resolver.config.server: IPv{fam} servers given but no interface "
                f"has IPv{fam} enabled")
        conn.section(f"ipv{fam}")["dns"] = servers[fam]
        targets.append((conn, fam))
    if search:
        if not targets:
            for fam in (4, 6):
                conn = pick(fam)
                if conn is not None:
                    targets.append((conn, fam))
                    break
        if not targets:
            raise UserInputError("dns-resolver.config.search: no interface has IP enabled")
        conn, fam = targets[0]
        conn.section(f"ipv{fam}")["dns-search"] = search


def load(data: bytes | str, *, source: str = "nmstate") -> Any:
    """Parse nmstate YAML or JSON (JSON is YAML)."""
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise UserInputError(f"{source}: parsing nmstate: {e}") from None
    except RecursionError:
        raise UserInputError(f"{source}: parsing nmstate: nested too deeply") from None


def keyfiles_from_file(path: str | Path) -> list[tuple[str, bytes]]:
    """Read an nmstate YAML/JSON file and return ``[(keyfile name, bytes), ...]``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserInputError(f"reading {p}: {e.strerror}") from None
    state = load(data, source=str(p))
    out = [(name, text.encode()) for name, text in translate(state, source=str(p))]
    if not out:
        raise UserInputError(f"{p}: the nmstate file defines no interfaces")
    return out
