"""The customize model: flags -> live Ignition config + initrd members (imagebuilder.iso.customize)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagebuilder.errors import UserInputError
from imagebuilder.ignition.decode import decode_data_url
from imagebuilder.iso import customize as cz
from imagebuilder.iso.areas import OsFeatures
from imagebuilder.iso.customize import Customizations


@pytest.fixture(scope="module")
def fx(shared_fixtures: Path) -> Path:
    return shared_fixtures / "customize"


def resource(res: dict[str, Any], *, gzipped: bool = True) -> bytes:
    """Decode an inline resource; configs, scripts and files must be gzip data URLs."""
    raw = decode_data_url(res["source"])
    if gzipped:
        assert res["compression"] == "gzip"
        assert res["source"].startswith("data:;base64,")
    return gzip.decompress(raw) if res.get("compression") == "gzip" else raw


def live(c: Customizations, features: OsFeatures | None = None) -> dict[str, Any]:
    return json.loads(cz.build_live_config(c, features))


def files(cfg: dict[str, Any]) -> dict[str, tuple[bytes, int]]:
    return {f["path"]: (resource(f["contents"]), f["mode"]) for f in cfg.get("storage", {}).get("files", [])}


def units(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in cfg.get("systemd", {}).get("units", [])}


def full(fx: Path) -> Customizations:
    """The flags of coreos-installer's own customize test (opts_common + opts_install)."""
    return Customizations(
        live_ignition=(str(fx / "live.ign"), str(fx / "live-2.ign")),
        pre_install=(str(fx / "pre-install-1"), str(fx / "pre-install-2")),
        post_install=(str(fx / "post-install-1"), str(fx / "post-install-2")),
        ignition_ca=(str(fx / "cert.pem"),),
        network_keyfile=(str(fx / "installer-test.nmconnection"),),
        network_nmstate=(str(fx / "installer-test-nmstate-json.json"),
                         str(fx / "installer-test-nmstate-yaml.yaml")),
        dest_ignition=(str(fx / "dest.ign"), str(fx / "dest-2.ign")),
        installer_config=(str(fx / "install-1.conf"), str(fx / "install-2.conf")),
        dest_device="/dev/vda",
        dest_console=("ttyS0,115200",),
        dest_karg_append=("dest-karg", "ignition.platform.id=qemu", "systemd.log_color=0", "rd.neednet=1"),
        dest_karg_delete=("ignition.platform.id=metal",),
    )


# --- the full coreos-installer test scenario --------------------------------------------

def test_full_scenario_live_config(fx: Path):
    cfg = live(full(fx))
    assert cfg["ignition"]["version"] == "3.3.0"
    # --live-ignition: each user config merged as a gzip data URL, in order, re-serialized
    merges = cfg["ignition"]["config"]["merge"]
    assert [json.loads(resource(m)) for m in merges] == [
        json.loads((fx / "live.ign").read_bytes()), json.loads((fx / "live-2.ign").read_bytes())]
    # --ignition-ca in the live config
    cas = cfg["ignition"]["security"]["tls"]["certificateAuthorities"]
    assert [resource(c, gzipped=False) for c in cas] == [(fx / "cert.pem").read_bytes()]

    f = files(cfg)
    # hook scripts, mode 0700
    for typ in ("pre", "post"):
        for n in (1, 2):
            assert f[f"/usr/local/bin/{typ}-install-{typ}-install-{n}"] == (
                (fx / f"{typ}-install-{n}").read_bytes(), 0o700)
    # installer configs: user files first, in order, then ours last
    assert f["/etc/coreos/installer.d/0000-install-1.conf"] == ((fx / "install-1.conf").read_bytes(), 0o600)
    assert f["/etc/coreos/installer.d/0001-install-2.conf"] == ((fx / "install-2.conf").read_bytes(), 0o600)
    ours, mode = f["/etc/coreos/installer.d/0002-customize.yaml"]
    assert mode == 0o600
    assert yaml.safe_load(ours) == {
        "ignition-file": "/etc/coreos/dest.ign",
        "console": ["ttyS0,115200n8"],
        "append-karg": ["dest-karg", "ignition.platform.id=qemu", "systemd.log_color=0", "rd.neednet=1"],
        "delete-karg": ["ignition.platform.id=metal"],
        "copy-network": True,
        "dest-device": "/dev/vda",
    }
    # key order is coreos-installer's InstallConfig field order
    assert [line.split(":")[0] for line in ours.decode().splitlines() if not line.startswith("-")] == [
        "ignition-file", "console", "append-karg", "delete-karg", "copy-network", "dest-device"]
    # the dest config: a 3.3.0 wrapper with the CA and both user configs merged
    dest_bytes, mode = f["/etc/coreos/dest.ign"]
    assert mode == 0o600
    dest = json.loads(dest_bytes)
    assert dest["ignition"]["version"] == "3.3.0"
    assert [resource(c, gzipped=False) for c in dest["ignition"]["security"]["tls"]["certificateAuthorities"]] == [
        (fx / "cert.pem").read_bytes()]
    assert [json.loads(resource(m)) for m in dest["ignition"]["config"]["merge"]] == [
        json.loads((fx / "dest.ign").read_bytes()), json.loads((fx / "dest-2.ign").read_bytes())]
    assert set(f) == {
        "/usr/local/bin/pre-install-pre-install-1", "/usr/local/bin/pre-install-pre-install-2",
        "/usr/local/bin/post-install-post-install-1", "/usr/local/bin/post-install-post-install-2",
        "/etc/coreos/installer.d/0000-install-1.conf", "/etc/coreos/installer.d/0001-install-2.conf",
        "/etc/coreos/installer.d/0002-customize.yaml", "/etc/coreos/dest.ign"}


def test_hook_units(fx: Path):
    u = units(live(full(fx)))
    assert sorted(u) == ["post-install-post-install-1.service", "post-install-post-install-2.service",
                         "pre-install-pre-install-1.service", "pre-install-pre-install-2.service"]
    pre = u["pre-install-pre-install-1.service"]
    assert pre["enabled"] is True
    text = pre["contents"]
    assert "After=coreos-installer-pre.target\nBefore=coreos-installer.service\n" in text
    assert "ExecStart=/usr/local/bin/pre-install-pre-install-1\n" in text
    assert "Type=oneshot" in text and "RemainAfterExit=true" in text
    assert "StandardOutput=kmsg+console\nStandardError=kmsg+console" in text
    assert text.endswith("[Install]\nRequiredBy=coreos-installer.service")
    assert "Description=Pre-Install Script (pre-install-1)" in text
    post = u["post-install-post-install-2.service"]["contents"]
    assert "After=coreos-installer.service\nBefore=coreos-installer.target\n" in post
    assert post.endswith("RequiredBy=coreos-installer.target")


def test_full_scenario_initrd_members(fx: Path):
    notes: list[str] = []
    m = cz.build_initrd_members(full(fx), notes=notes.append)
    assert sorted(m) == [
        "config.ign",
        "etc/coreos-firstboot-network/installer-test.nmconnection",
        "etc/coreos-firstboot-network/nmstate-js-eth1.nmconnection",
        "etc/coreos-firstboot-network/nmstate-js-eth2.nmconnection",
        "etc/coreos-firstboot-network/nmstate-yl-eth1.nmconnection",
        "etc/coreos-firstboot-network/nmstate-yl-eth2.nmconnection",
    ]
    assert m["etc/coreos-firstboot-network/installer-test.nmconnection"] == (
        fx / "installer-test.nmconnection").read_bytes()
    assert m["config.ign"] == cz.build_live_config(full(fx))
    assert m["config.ign"].endswith(b"\n")
    assert notes == ["Boot media will automatically install to /dev/vda without confirmation."]


def test_deterministic(fx: Path):
    assert cz.build_live_config(full(fx)) == cz.build_live_config(full(fx))


# --- dest config shapes -------------------------------------------------------------------

def test_single_dest_config_is_embedded_as_is(fx: Path):
    c = Customizations(dest_ignition=(str(fx / "dest-2.ign"),), dest_device="/dev/vda",
                       dest_karg_append=("console=ttyS0,115200",))
    f = files(live(c))
    dest, _ = f["/etc/coreos/dest.ign"]
    assert dest.endswith(b"\n")
    assert json.loads(dest) == json.loads((fx / "dest-2.ign").read_bytes())
    conf = yaml.safe_load(f["/etc/coreos/installer.d/0000-customize.yaml"][0])
    assert conf == {"ignition-file": "/etc/coreos/dest.ign", "append-karg": ["console=ttyS0,115200"],
                    "dest-device": "/dev/vda"}


def test_console_karg_note(fx: Path):
    notes: list[str] = []
    cz.build_initrd_members(Customizations(dest_karg_append=("console=ttyS0,115200", "quiet")),
                            notes=notes.append)
    assert notes[:2] == [
        'Note: consider using "--dest-console ttyS0,115200" instead of '
        '"--dest-karg-append console=ttyS0,115200" to configure both kernel and bootloader consoles.',
        "Boot media will automatically run installer."]
    notes.clear()
    cz.build_initrd_members(Customizations(dest_karg_append=("console=ttyS0,115200", "console=weird"),
                                           dest_device="/dev/sda"), notes=notes.append)
    assert notes == ["Boot media will automatically install to /dev/sda without confirmation."]


def test_no_dest_device_note(fx: Path, tmp_path: Path):
    notes: list[str] = []
    cz.build_initrd_members(Customizations(dest_ignition=(str(fx / "dest-2.ign"),)), notes=notes.append)
    assert notes[0] == "Boot media will automatically run installer."
    assert "no destination device" in notes[1] and "coreos.inst.install_dev=" in notes[1]
    conf = tmp_path / "dev.yaml"
    conf.write_text("dest-device: /dev/nvme0n1\n")
    notes.clear()
    cz.build_initrd_members(Customizations(dest_ignition=(str(fx / "dest-2.ign"),), installer_config=(str(conf),)),
                            notes=notes.append)
    assert notes == ["Boot media will automatically run installer."]


def test_single_dest_config_with_ca_gets_wrapped(fx: Path):
    c = Customizations(dest_ignition=(str(fx / "dest-2.ign"),), ignition_ca=(str(fx / "cert.pem"),))
    dest = json.loads(files(live(c))["/etc/coreos/dest.ign"][0])
    assert dest["ignition"]["version"] == "3.3.0"
    assert len(dest["ignition"]["config"]["merge"]) == 1
    assert len(dest["ignition"]["security"]["tls"]["certificateAuthorities"]) == 1


def test_ca_without_dest_config_only_goes_to_live(fx: Path):
    cfg = live(Customizations(ignition_ca=(str(fx / "cert.pem"),)))
    assert "/etc/coreos/dest.ign" not in files(cfg)
    assert len(cfg["ignition"]["security"]["tls"]["certificateAuthorities"]) == 1
    # no installer run
    assert not any(p.startswith("/etc/coreos/installer.d/") for p in files(cfg))


def test_network_only_does_not_run_installer(fx: Path):
    notes: list[str] = []
    m = cz.build_initrd_members(Customizations(network_keyfile=(str(fx / "installer-test.nmconnection"),)),
                                notes=notes.append)
    # the live config would be empty: no config.ign at all (coreos-installer >= 0.17)
    assert sorted(m) == ["etc/coreos-firstboot-network/installer-test.nmconnection"]
    assert notes == []


def test_installer_config_alone_runs_installer_without_our_yaml(fx: Path):
    notes: list[str] = []
    c = Customizations(installer_config=(str(fx / "install-1.conf"),),
                       network_keyfile=(str(fx / "installer-test.nmconnection"),))
    m = cz.build_initrd_members(c, notes=notes.append)
    f = files(json.loads(m["config.ign"]))
    # copy-network needs our config file: it comes after the user's
    assert yaml.safe_load(f["/etc/coreos/installer.d/0001-customize.yaml"][0]) == {"copy-network": True}
    assert notes[0] == "Boot media will automatically run installer."


def test_empty_customization():
    c = Customizations()
    assert c.is_empty and not c.has_initrd_changes
    assert cz.build_initrd_members(c) == {}
    assert json.loads(cz.build_live_config(c)) == {"ignition": {"version": "3.3.0"}}


def test_live_kargs_only_leave_the_initrd_alone():
    c = Customizations(live_karg_append=("foo",), live_karg_replace=("a=b=c",))
    assert c.has_live_kargs and not c.has_initrd_changes
    assert cz.build_initrd_members(c) == {}


# --- consoles -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,norm", [
    ("ttyS0", "ttyS0,9600n8"), ("ttyS0,115200", "ttyS0,115200n8"), ("ttyAMA1,115200e7", "ttyAMA1,115200e7"),
    ("ttyS2,5o", "ttyS2,5o8"), ("tty0", "tty0"), ("hvc0", "hvc0"), ("ttysclp0", "ttysclp0"),
])
def test_console_normalization(spec, norm):
    assert cz.normalize_console(spec) == norm


@pytest.mark.parametrize("spec", ["foo", "/dev/ttyS0", "console=ttyS0", "tty1", "ttyS0,", "ttyS0,115200p8",
                                  "ttyS0,115200n4", "ttyB0"])
def test_console_rejects(spec):
    with pytest.raises(UserInputError):
        Customizations(dest_console=(spec,))


# --- errors and feature gates (coreos-installer's messages) --------------------------------

OLD = OsFeatures()  # an image without features.json
NO_CONSOLE = OsFeatures(installer_config=True, installer_config_directives={}, live_initrd_network=True,
                        present=True)


@pytest.mark.parametrize("kw,features,msg", [
    (dict(network_keyfile=("installer-test.nmconnection",)), OLD, "does not support customizing network settings"),
    (dict(network_nmstate=("installer-test-nmstate-json.json",)), OLD,
     "does not support customizing network settings"),
    (dict(dest_device="/dev/loop0"), OLD, "does not support customizing installer configuration"),
    (dict(installer_config=("install-1.conf",)), OLD, "does not support customizing installer configuration"),
    (dict(dest_console=("ttyS0",)), NO_CONSOLE, "does not support customizing the destination console"),
])
def test_feature_gates(fx: Path, kw, features, msg):
    kw = {k: (tuple(str(fx / p) for p in v) if isinstance(v, tuple) and k != "dest_console" else v)
          for k, v in kw.items()}
    with pytest.raises(UserInputError, match=msg):
        cz.build_initrd_members(Customizations(**kw), features, notes=lambda m: None)


def test_old_image_still_takes_hooks_and_live_configs(fx: Path):
    m = cz.build_initrd_members(Customizations(pre_install=(str(fx / "pre-install-1"),),
                                               live_ignition=(str(fx / "live.ign"),)), OLD)
    assert list(m) == ["config.ign"]


@pytest.mark.parametrize("kw,msg", [
    (dict(pre_install=("pre-install-1", "pre-install-1")), "already specifies path"),
    (dict(network_keyfile=("installer-test.nmconnection", "installer-test.nmconnection")),
     "already specifies keyfile installer-test.nmconnection"),
    (dict(network_keyfile=("nmstate-js-eth1.nmconnection",), network_nmstate=("installer-test-nmstate-json.json",)),
     "already specifies keyfile nmstate-js-eth1.nmconnection"),
    (dict(network_keyfile=("nmstate-yl-eth2.nmconnection",), network_nmstate=("installer-test-nmstate-yaml.yaml",)),
     "already specifies keyfile nmstate-yl-eth2.nmconnection"),
    (dict(live_ignition=("installer-test.nmconnection",)), "parsing Ignition config"),
    (dict(dest_ignition=("installer-test.nmconnection",)), "parsing Ignition config"),
    (dict(installer_config=("installer-test.nmconnection",)), "parsing installer config"),
    (dict(installer_config=("dest.bu",)), "parsing installer config .*unknown field `variant`"),
    (dict(pre_install=("no-such-file",)), "reading .*no-such-file"),
    (dict(ignition_ca=("installer-test.nmconnection",)), "installer-test.nmconnection: CA bundle holds no PEM"),
    (dict(dest_ignition=("dest.ign", "dest-2.ign", "dest.ign")),
     "--dest-ignition .*dest.ign: same config as .*dest.ign; Ignition rejects duplicate merge entries"),
    (dict(live_ignition=("live.ign", "live.ign")), "--live-ignition .*: same config as"),
])
def test_arg_restrictions(fx: Path, kw, msg):
    kw = {k: tuple(str(fx / p) for p in v) for k, v in kw.items()}
    with pytest.raises(UserInputError, match=msg):
        cz.build_initrd_members(Customizations(**kw), notes=lambda m: None)


def test_unsupported_ignition_version(tmp_path: Path):
    p = tmp_path / "v2.ign"
    p.write_text('{"ignition": {"version": "2.2.0"}}')
    with pytest.raises(UserInputError, match="unsupported config version 2.2.0") as ei:
        cz.build_live_config(Customizations(live_ignition=(str(p),)))
    assert "3.0.0, 3.1.0, 3.2.0, 3.3.0, 3.4.0, 3.5.0, 3.6.0 is accepted" in ei.value.hint


def test_every_known_spec_version_is_accepted(tmp_path: Path):
    """Including 3.6.0, which `ignition merge` itself writes (the hint lists the same set)."""
    from imagebuilder.ignition import spec

    for v in spec.SUPPORTED_VERSIONS:
        p = tmp_path / f"{v}.ign"
        p.write_text(f'{{"ignition": {{"version": "{v}"}}}}')
        members = cz.build_initrd_members(Customizations(dest_ignition=(str(p),)))
        dest = json.loads(files(json.loads(members["config.ign"]))["/etc/coreos/dest.ign"][0])
        assert dest["ignition"]["version"] == str(v)


def test_user_configs_are_checked(tmp_path: Path):
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition": {"version": "3.3.0"}, "systemd": {"units": [{"name": "a.service", "enabled": "yes"}]}}')
    with pytest.raises(UserInputError, match=r"parsing Ignition config .*bad.ign: error at \$.systemd.units.0.enabled"):
        cz.build_live_config(Customizations(dest_ignition=(str(bad),)))
    odd = tmp_path / "odd.ign"
    odd.write_text('{"ignition": {"version": "3.2.0"}, "foo": 1}')
    notes: list[str] = []
    m = cz.build_initrd_members(Customizations(live_ignition=(str(odd),)), notes=notes.append)
    assert notes == [f"Warning parsing {odd}: warning at $.foo, line 1 col 36: unused key foo"]
    # the user's config is kept as given (spec 3.2.0, unknown key and all) inside the merge entry
    merged = json.loads(m["config.ign"])["ignition"]["config"]["merge"][0]
    assert json.loads(resource(merged)) == {"ignition": {"version": "3.2.0"}, "foo": 1}


def test_bad_karg_replace():
    with pytest.raises(UserInputError, match="KARG=OLDVAL=NEWVAL"):
        Customizations(live_karg_replace=("foo=bar",))


# --- features.json ---------------------------------------------------------------------------

def test_features_from_json():
    f = cz.features_from_json(b'{"installer-config": true, "installer-config-directives": {"console": true},'
                              b' "live-initrd-network": true}')
    assert f.installer_config and f.live_initrd_network and f.installer_config_directives == {"console": True}
    assert cz.features_from_json(None) == OsFeatures()


# --- pxe customize (library level; the CLI is exercised in tests/integration) ---------------

def _initrd(**members: bytes) -> bytes:
    from imagebuilder.iso import cpio

    return gzip.compress(cpio.newc_archive(cpio.members_from(members.items())), mtime=0)


def test_pxe_customize_initrd(fx: Path):
    from imagebuilder.iso.pxe import customize_initrd
    from imagebuilder.iso import cpio

    feats = b'{"installer-config": true, "live-initrd-network": true}'
    src = _initrd(**{"etc/coreos-live-initramfs": b"", "etc/coreos/features.json": feats})
    c = Customizations(dest_device="/dev/sda", network_keyfile=(str(fx / "installer-test.nmconnection"),))
    notes: list[str] = []
    tail = customize_initrd(src, c, notes=notes.append)
    assert any("Boot media will automatically install to /dev/sda" in n for n in notes)
    assert tail.startswith(b"\xfd7zXZ\x00")
    members = cpio.read_initrd(src + tail)
    assert "etc/coreos-firstboot-network/installer-test.nmconnection" in members
    assert "etc/coreos-live-initramfs" in members
    assert customize_initrd(src, Customizations(), notes=notes.append) == b""
    # no console directive in this image's features
    with pytest.raises(UserInputError, match="destination console"):
        customize_initrd(src, Customizations(dest_console=("ttyS0",)), notes=notes.append)
    with pytest.raises(UserInputError, match="already customized"):
        customize_initrd(src + tail, c, notes=notes.append)
    old = _initrd(**{"etc/coreos-live-initramfs": b""})  # no features.json
    with pytest.raises(UserInputError, match="does not support customizing network settings"):
        customize_initrd(old, c, notes=notes.append)
    with pytest.raises(UserInputError, match="not a CoreOS live initramfs image"):
        customize_initrd(_initrd(**{"config.ign": b"{}"}), c, notes=notes.append)
