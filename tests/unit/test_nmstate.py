"""nmstate -> NetworkManager keyfile translation (imagebuilder.iso.nmstate)."""

from __future__ import annotations

import configparser
import uuid
from pathlib import Path

import pytest

from imagebuilder.errors import UserInputError
from imagebuilder.iso import nmstate


def kf(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def gen(doc: str) -> dict[str, str]:
    return dict(nmstate.translate(nmstate.load(doc)))


# --- the shared coreos-installer inputs ------------------------------------------------

@pytest.mark.parametrize("src,prefix", [
    ("installer-test-nmstate-yaml.yaml", "nmstate-yl"),
    ("installer-test-nmstate-json.json", "nmstate-js"),
])
def test_shared_inputs_give_the_expected_keyfile_names_and_settings(shared_fixtures: Path, src, prefix):
    d = shared_fixtures / "customize"
    out = dict(nmstate.keyfiles_from_file(d / src))
    expected_names = [f"{prefix}-eth1.nmconnection", f"{prefix}-eth2.nmconnection"]
    assert sorted(out) == expected_names
    for name in expected_names:
        ours = kf(out[name].decode())
        theirs = kf((d / name).read_text())
        # Every setting of the shared keyfile is in ours with the same value, except the
        # hand-written id of nmstate-js-eth1 ("nmstate-json-eth1"): nmstate names a profile
        # after its interface, so no translator can produce that id from this input.
        for sec in theirs.sections():
            for key, value in theirs[sec].items():
                if name == "nmstate-js-eth1.nmconnection" and (sec, key) == ("connection", "id"):
                    assert value == "nmstate-json-eth1"
                    assert ours[sec][key] == "nmstate-js-eth1"
                    continue
                assert ours[sec][key] == value, (name, sec, key)
        # what we add on top, as nmstate does: bind the profile to its device, no IPv6
        iface = name.removesuffix(".nmconnection")
        assert ours["connection"]["interface-name"] == iface
        assert ours["connection"]["uuid"] == str(uuid.uuid5(nmstate.UUID_NAMESPACE, iface))
        assert ours["ipv6"]["method"] == "disabled"


def test_yaml_output_exact_bytes(shared_fixtures: Path):
    out = dict(nmstate.keyfiles_from_file(shared_fixtures / "customize" / "installer-test-nmstate-yaml.yaml"))
    u = uuid.uuid5(nmstate.UUID_NAMESPACE, "nmstate-yl-eth1")
    assert out["nmstate-yl-eth1.nmconnection"].decode() == (
        "[connection]\nautoconnect=true\nid=nmstate-yl-eth1\ninterface-name=nmstate-yl-eth1\n"
        f"type=ethernet\nuuid={u}\n\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=disabled\n\n"
        "[ethernet]\n")


def test_deterministic():
    doc = "interfaces: [{name: eth0, type: ethernet, ipv4: {enabled: true, dhcp: true}}]"
    assert gen(doc) == gen(doc)


# --- static addressing, dns, routes -------------------------------------------------------

STATIC = """
interfaces:
- name: eth0
  type: ethernet
  state: up
  mtu: 9000
  mac-address: 52:54:00:aa:bb:cc
  ipv4:
    enabled: true
    dhcp: false
    address:
    - ip: 192.0.2.10
      prefix-length: 24
    - ip: 198.51.100.7
      prefix-length: 25
  ipv6:
    enabled: true
    autoconf: false
    dhcp: false
    address:
    - ip: 2001:db8::10
      prefix-length: 64
- name: eth1
  type: ethernet
  ipv4: {enabled: true, dhcp: true, auto-dns: false, auto-gateway: false}
  ipv6: {enabled: true, autoconf: true, dhcp: true, auto-routes: false}
dns-resolver:
  config:
    server: [192.0.2.1, 2001:db8::1]
    search: [example.com, example.org]
routes:
  config:
  - destination: 0.0.0.0/0
    next-hop-address: 192.0.2.1
    next-hop-interface: eth0
  - destination: 10.1.0.0/16
    next-hop-address: 198.51.100.1
    next-hop-interface: eth0
    metric: 150
  - destination: ::/0
    next-hop-address: 2001:db8::1
    next-hop-interface: eth0
    metric: 100
  - destination: 172.16.0.0/12
    next-hop-interface: eth1
    metric: 5
"""


def test_static_dns_routes():
    out = gen(STATIC)
    assert list(out) == ["eth0.nmconnection", "eth1.nmconnection"]
    e0 = kf(out["eth0.nmconnection"])
    assert e0["ethernet"]["mtu"] == "9000"
    assert e0["ethernet"]["mac-address"] == "52:54:00:AA:BB:CC"
    assert dict(e0["ipv4"]) == {
        "method": "manual",
        "address1": "192.0.2.10/24",
        "address2": "198.51.100.7/25",
        "route1": "0.0.0.0/0,192.0.2.1",
        "route2": "10.1.0.0/16,198.51.100.1,150",
        "dns": "192.0.2.1",
        "dns-search": "example.com;example.org",
    }
    assert dict(e0["ipv6"]) == {
        "method": "manual",
        "address1": "2001:db8::10/64",
        "route1": "::/0,2001:db8::1,100",
        "dns": "2001:db8::1",
    }
    e1 = kf(out["eth1.nmconnection"])
    assert dict(e1["ipv4"]) == {"method": "auto", "ignore-auto-dns": "true", "never-default": "true",
                                "route1": "172.16.0.0/12,0.0.0.0,5"}
    assert dict(e1["ipv6"]) == {"method": "auto", "ignore-auto-routes": "true"}


def test_dns_goes_to_first_enabled_interface_without_default_route():
    out = gen("""
interfaces:
- {name: eth0, type: ethernet, ipv4: {enabled: false}}
- {name: eth1, type: ethernet, ipv4: {enabled: true, dhcp: true}}
dns-resolver: {config: {search: [lab.example]}}
""")
    assert "dns-search" not in kf(out["eth0.nmconnection"])["ipv4"]
    assert kf(out["eth1.nmconnection"])["ipv4"]["dns-search"] == "lab.example"


def test_ipv6_methods():
    def m(ip6: str) -> str:
        return kf(gen(f"interfaces: [{{name: e, type: ethernet, ipv6: {ip6}}}]")["e.nmconnection"])["ipv6"]["method"]
    assert m("{enabled: true, dhcp: true, autoconf: false}") == "dhcp"
    assert m("{enabled: true, autoconf: true}") == "auto"
    assert m("{enabled: true}") == "link-local"
    assert m("{enabled: false}") == "disabled"


def test_string_booleans_like_the_json_fixture():
    out = gen('{"interfaces": [{"name": "e", "type": "ethernet", "ipv4": {"enabled": "true", "dhcp": "false",'
              ' "address": [{"ip": "192.0.2.1", "prefix-length": "24"}]}}]}')
    assert kf(out["e.nmconnection"])["ipv4"]["address1"] == "192.0.2.1/24"


# --- bond, vlan, bridge -------------------------------------------------------------------

def test_bond_with_declared_and_implied_ports():
    out = gen("""
interfaces:
- name: bond0
  type: bond
  state: up
  link-aggregation:
    mode: active-backup
    options: {miimon: 100, primary: eth1}
    port: [eth1, eth2]
  ipv4: {enabled: true, dhcp: true}
- name: eth1
  type: ethernet
  state: up
""")
    assert list(out) == ["bond0.nmconnection", "eth1.nmconnection", "eth2.nmconnection"]
    b = kf(out["bond0.nmconnection"])
    assert b["connection"]["type"] == "bond"
    assert b["connection"]["autoconnect-slaves"] == "1"
    assert dict(b["bond"]) == {"mode": "active-backup", "miimon": "100", "primary": "eth1"}
    assert b["ipv4"]["method"] == "auto"
    for port in ("eth1", "eth2"):
        p = kf(out[f"{port}.nmconnection"])
        assert p["connection"]["master"] == "bond0"
        assert p["connection"]["slave-type"] == "bond"
        assert p["connection"]["type"] == "ethernet"
        assert not p.has_section("ipv4") and not p.has_section("ipv6")
    # sections in nmstate's order
    text = out["bond0.nmconnection"]
    assert text.index("[connection]") < text.index("[bond]") < text.index("[ipv4]") < text.index("[ipv6]")


def test_vlan_on_bond_and_bridge():
    out = gen("""
interfaces:
- name: br0
  type: linux-bridge
  bridge:
    options: {stp: {enabled: true, priority: 4096, forward-delay: 4}}
    port: [{name: eth3}, {name: bond1.10}]
  ipv4: {enabled: true, address: [{ip: 203.0.113.2, prefix-length: 24}]}
- name: bond1.10
  type: vlan
  vlan: {base-iface: bond1, id: 10}
- name: bond1
  type: bond
  link-aggregation: {mode: 802.3ad, ports: [eth4, eth5]}
""")
    assert sorted(out) == sorted(f"{n}.nmconnection" for n in
                                 ["br0", "bond1.10", "bond1", "eth3", "eth4", "eth5"])
    br = kf(out["br0.nmconnection"])
    assert br["connection"]["type"] == "bridge"
    assert dict(br["bridge"]) == {"stp": "true", "priority": "4096", "forward-delay": "4"}
    v = kf(out["bond1.10.nmconnection"])
    assert dict(v["vlan"]) == {"id": "10", "parent": "bond1"}
    assert v["connection"]["master"] == "br0" and v["connection"]["slave-type"] == "bridge"
    assert kf(out["eth4.nmconnection"])["connection"]["master"] == "bond1"
    assert kf(out["bond1.nmconnection"])["ipv4"]["method"] == "disabled"


def test_bridge_stp_defaults_off():
    out = gen("interfaces: [{name: br1, type: linux-bridge, bridge: {port: []}}]")
    assert kf(out["br1.nmconnection"])["bridge"]["stp"] == "false"


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("doc,needle", [
    ("interfaces: [{name: a, type: ethernet}, {name: b, type: ovs-bridge}]",
     "interfaces[1].type: 'ovs-bridge' is not supported by imagebuilder's nmstate translator "
     "(supported types: ethernet, bond, vlan, linux-bridge)"),
    ("interfaces: [{name: a, type: ethernet, ethtool: {}}]", "interfaces[0].ethtool: key 'ethtool'"),
    ("interfaces: [{name: a, state: absent}]", "interfaces[0].state: 'absent' is not supported"),
    ("route-rules: {config: []}", "route-rules: key 'route-rules' is not supported"),
    ("interfaces: [{name: a, ipv4: {enabled: true, dhcp: true, dhcp-client-id: mac}}]",
     "interfaces[0].ipv4.dhcp-client-id"),
    ("interfaces: [{name: a, ipv4: {enabled: true, address: [{ip: 2001:db8::1, prefix-length: 64}]}}]",
     "interfaces[0].ipv4.address[0].ip: 2001:db8::1 is not an IPv4 address"),
    ("interfaces: [{name: a, ipv4: {enabled: true, address: [{ip: 10.0.0.1, prefix-length: 33}]}}]",
     "interfaces[0].ipv4.address[0].prefix-length: 33 is out of range"),
    ("interfaces: [{name: b0, type: bond, link-aggregation: {mode: fancy, port: []}}]",
     "interfaces[0].link-aggregation.mode: 'fancy' is not supported"),
    ("interfaces: [{name: b0, type: bond, link-aggregation: {mode: balance-rr, port-config: []}}]",
     "interfaces[0].link-aggregation.port-config"),
    ("interfaces: [{name: v, type: vlan, vlan: {base-iface: e, id: 5000}}]",
     "interfaces[0].vlan.id: 5000 is out of range"),
    ("interfaces: [{name: br, type: linux-bridge, bridge: {port: [{name: e, stp-priority: 3}]}}]",
     "interfaces[0].bridge.port[0].stp-priority"),
    ("interfaces: [{name: b0, type: bond, link-aggregation: {mode: balance-rr, port: [e]}},"
     " {name: e, ipv4: {enabled: true, dhcp: true}}]",
     "interfaces[1].ipv4: 'e' is a port of 'b0' and cannot have IP enabled"),
    ("interfaces: [{name: a}]\nroutes: {config: [{destination: 10.0.0.0/8, next-hop-interface: zz}]}",
     "routes.config[0].next-hop-interface: 'zz' is not one of the interfaces"),
    ("interfaces: [{name: a}]\nroutes: {config: [{destination: 10.0.0.0/8, next-hop-interface: a}]}",
     "routes.config[0]: IPv4 route via 'a', which has IPv4 disabled"),
    ("interfaces: [{name: a}]\nroutes: {config: [{destination: 10.0.0.0/8, next-hop-interface: a, table-id: 5}]}",
     "routes.config[0].table-id"),
    ("interfaces: [{name: a}]\ndns-resolver: {config: {server: [192.0.2.1]}}",
     "IPv4 servers given but no interface has IPv4 enabled"),
    ("interfaces: [{name: a/b}]", "interfaces[0].name: invalid interface name"),
    ("interfaces: [{name: a}, {name: a}]", "interfaces[1].name: interface 'a' is listed twice"),
    ("interfaces: [{name: a, ipv4: {enabled: maybe}}]", "interfaces[0].ipv4.enabled: expected a boolean"),
])
def test_errors_name_the_path(doc, needle):
    with pytest.raises(UserInputError) as ei:
        nmstate.translate(nmstate.load(doc), source="net.yaml")
    assert str(ei.value).startswith("net.yaml: ")
    assert needle in str(ei.value)


def test_file_errors(tmp_path: Path):
    with pytest.raises(UserInputError, match="reading"):
        nmstate.keyfiles_from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("interfaces: [\n")
    with pytest.raises(UserInputError, match="parsing nmstate"):
        nmstate.keyfiles_from_file(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("interfaces: []\n")
    with pytest.raises(UserInputError, match="defines no interfaces"):
        nmstate.keyfiles_from_file(empty)


@pytest.mark.parametrize("doc", ["[" * 3000, "{a: " * 3000, "interfaces: " + "[" * 1500])
def test_deep_nesting_is_an_input_error(doc):
    with pytest.raises(UserInputError, match="nested too deeply"):
        nmstate.translate(nmstate.load(doc))
