"""``iso customize`` / ``pxe customize`` end to end, checked with the real ``ignition-validate``.

* every generated live config (and dest config) passes ``ignition-validate`` (Debian's
  ignition 2.14) across combinations of flags over the shared coreos-installer inputs;
* the CLI on the shared fixture ISOs behaves like coreos-installer's tests/images/customize.sh:
  the three output modes are byte-identical, errors carry coreos-installer's messages,
  a no-op or ``-f`` with no flags gives back the pristine image;
* ``pxe customize`` appends an xz archive to a (synthetic) live initramfs.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.errors import UserInputError
from imagebuilder.ignition.decode import decode_data_url
from imagebuilder.iso import cpio
from imagebuilder.iso import customize as cz
from imagebuilder.iso.customize import Customizations
from imagebuilder.iso.image import IsoImage
from imagebuilder.run import run, which

from conftest import run_cli


@pytest.fixture(scope="module")
def ignition_validate() -> str:
    tool = which("ignition-validate")
    if tool is None:
        pytest.skip("ignition-validate not installed (apt-get install ignition)")
    return tool


@pytest.fixture(scope="module")
def fx(shared_fixtures: Path) -> Path:
    return shared_fixtures / "customize"


def validate(tool: str, data: bytes, tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(data)
    proc = run([tool, p], check=False, text=True)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and out == "", f"ignition-validate {name}:\n{out}"


# each flag on its own, with the shared inputs
FLAGS: dict[str, dict] = {
    "live-ignition": dict(live_ignition=("live.ign", "live-2.ign")),
    "dest-ignition-a": dict(dest_ignition=("dest.ign",)),
    "dest-ignition-b": dict(dest_ignition=("dest-2.ign",)),  # alone: embedded as-is
    "ca": dict(ignition_ca=("cert.pem",)),
    "hooks": dict(pre_install=("pre-install-1", "pre-install-2"), post_install=("post-install-1", "post-install-2")),
    "installer-config": dict(installer_config=("install-1.conf", "install-2.conf")),
    "dest-options": dict(dest_device="/dev/vda", dest_console=("ttyS0,115200",),
                         dest_karg_append=("dest-karg", "ignition.platform.id=qemu"), dest_karg_delete=("ignition.platform.id=metal",)),
    "network": dict(network_keyfile=("installer-test.nmconnection",),
                    network_nmstate=("installer-test-nmstate-json.json", "installer-test-nmstate-yaml.yaml")),
}
PATH_FIELDS = {"live_ignition", "dest_ignition", "ignition_ca", "pre_install", "post_install",
               "installer_config", "network_keyfile", "network_nmstate"}


def make(fx: Path, *names: str) -> Customizations:
    kw: dict = {}
    for n in names:
        for k, v in FLAGS[n].items():
            if k in PATH_FIELDS:
                v = tuple(str(fx / p) for p in v)
            kw[k] = kw.get(k, ()) + v if isinstance(v, tuple) else v
    return Customizations(**kw)


COMBOS = [(n,) for n in FLAGS] + list(itertools.combinations(sorted(FLAGS), 2)) + [tuple(FLAGS)]


@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_generated_configs_pass_ignition_validate(combo, fx: Path, ignition_validate: str, tmp_path: Path):
    c = make(fx, *combo)
    members = cz.build_initrd_members(c, notes=lambda m: None)
    live_cfg = cz.build_live_config(c)
    assert live_cfg == cz.build_live_config(c)  # deterministic
    if combo == ("network",):
        assert "config.ign" not in members  # nothing for Ignition to do
    else:
        assert members["config.ign"] == live_cfg
    validate(ignition_validate, live_cfg, tmp_path, "live.ign")
    cfg = json.loads(live_cfg)
    assert cfg["ignition"]["version"] == "3.3.0"
    for f in cfg.get("storage", {}).get("files", []):
        if f["path"] == "/etc/coreos/dest.ign":
            validate(ignition_validate, gzip.decompress(decode_data_url(f["contents"]["source"])),
                     tmp_path, "dest.ign")


# --- the CLI on the shared fixture ISOs -----------------------------------------------------

def unpack(shared_fixtures: Path, name: str, dest: Path) -> Path:
    out = dest / name.removesuffix(".xz")
    out.write_bytes(lzma.decompress((shared_fixtures / "iso" / name).read_bytes()))
    return out


def sha(p: Path | bytes) -> str:
    return hashlib.sha256(p if isinstance(p, bytes) else p.read_bytes()).hexdigest()


def full_opts(fx: Path) -> list[str]:
    f = lambda n: str(fx / n)  # noqa: E731
    return [
        "--live-ignition", f("live.ign"), "--live-ignition", f("live-2.ign"),
        "--pre-install", f("pre-install-1"), "--pre-install", f("pre-install-2"),
        "--post-install", f("post-install-1"), "--post-install", f("post-install-2"),
        "--ignition-ca", f("cert.pem"),
        "--network-keyfile", f("installer-test.nmconnection"),
        "--network-nmstate", f("installer-test-nmstate-json.json"),
        "--network-nmstate", f("installer-test-nmstate-yaml.yaml"),
        "--dest-ignition", f("dest.ign"), "--dest-ignition", f("dest-2.ign"),
        "--installer-config", f("install-1.conf"), "--installer-config", f("install-2.conf"),
        "--dest-device", "/dev/vda", "--dest-console", "ttyS0,115200",
        "--dest-karg-append", "dest-karg", "--dest-karg-delete", "ignition.platform.id=metal",
        "--dest-karg-append", "ignition.platform.id=qemu",
    ]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def fails(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert needle in proc.stderr.decode(), proc.stderr.decode()


@pytest.mark.parametrize("iso_name", ["embed-areas-2023-03.x86_64.iso.xz", "embed-areas-2022-09.iso.xz"])
def test_iso_customize_end_to_end(iso_name, shared_fixtures: Path, fx: Path, tmp_path: Path,
                                  ignition_validate: str):
    src = unpack(shared_fixtures, iso_name, tmp_path)
    pristine = sha(src)
    opts = full_opts(fx) + ["--live-karg-append", "rd.neednet=1", "--live-karg-append", "console=ttyS0,115200"]
    out = tmp_path / "out.iso"
    proc = ok(run_cli("iso", "customize", str(src), "-o", str(out), *opts))
    assert b"Boot media will automatically install to /dev/vda without confirmation." in proc.stderr
    expected = sha(out)
    assert sha(src) == pristine and out.stat().st_size == src.stat().st_size
    # in place and to stdout: byte-identical
    inplace = tmp_path / "inplace.iso"
    shutil.copyfile(src, inplace)
    ok(run_cli("iso", "customize", str(inplace), *opts))
    assert sha(inplace) == expected
    assert sha(ok(run_cli("iso", "customize", str(src), "-o", "-", *opts)).stdout) == expected
    # what landed in the ISO
    cfg = ok(run_cli("iso", "ignition", "show", str(out))).stdout
    validate(ignition_validate, cfg, tmp_path, "embedded.ign")
    assert cfg == cz.build_live_config(make(fx, *FLAGS))
    if iso_name != "embed-areas-2023-03.x86_64.iso.xz":
        return  # the rest does not depend on the image generation
    # errors
    fails(run_cli("iso", "customize", str(src), "-o", str(out), *opts), "file exists")
    fails(run_cli("iso", "customize", str(out), *opts), "already customized")
    fails(run_cli("iso", "customize", str(out), "-o", str(tmp_path / "x.iso"), *opts), "already customized")
    kargs = ok(run_cli("iso", "kargs", "show", str(out))).stdout.decode().split()
    assert kargs[-2:] == ["rd.neednet=1", "console=ttyS0,115200"]
    net = ok(run_cli("iso", "network", "extract", str(out))).stdout.decode()
    for name in ("installer-test", "nmstate-js-eth1", "nmstate-js-eth2", "nmstate-yl-eth1", "nmstate-yl-eth2"):
        assert f"########## {name}.nmconnection ##########" in net
    # -f with no flags: back to the pristine bytes
    ok(run_cli("iso", "customize", "-f", str(out)))
    assert sha(out) == pristine


def test_iso_customize_kargs_and_noop(shared_fixtures: Path, tmp_path: Path):
    src = unpack(shared_fixtures, "embed-areas-2023-03.x86_64.iso.xz", tmp_path)
    noop = tmp_path / "noop.iso"
    ok(run_cli("iso", "customize", str(src), "-o", str(noop)))
    assert sha(noop) == sha(src)
    out = tmp_path / "k.iso"
    ok(run_cli("customize-iso", str(src), "-o", str(out), "--live-karg-append", "foo",
               "--live-karg-replace", "ignition.platform.id=metal=bar"))
    kargs = ok(run_cli("iso", "kargs", "show", str(out))).stdout.decode().split()
    assert "ignition.platform.id=bar" in kargs and kargs[-1] == "foo"
    # only live kargs: no Ignition config is embedded (coreos-installer #1109)
    fails(run_cli("iso", "ignition", "show", str(out)), "No embedded Ignition config")
    # live kargs apply to the default kargs, not the current ones
    ok(run_cli("iso", "customize", "-f", str(out), "--live-karg-delete", "ignition.platform.id=metal"))
    assert "ignition.platform.id" not in ok(run_cli("iso", "kargs", "show", str(out))).stdout.decode()


def _gate(iso_path: Path, c: Customizations) -> str | None:
    """Run the library path of ``iso customize`` (no write); the error message or None."""
    with IsoImage.open(iso_path) as iso:
        try:
            cz.customize_iso(iso, c, notes=lambda m: None)
            iso.patches()
        except UserInputError as e:
            return e.message
    return None


def test_iso_customize_feature_gates(shared_fixtures: Path, fx: Path, tmp_path: Path):
    old = unpack(shared_fixtures, "embed-areas-2021-01.iso.xz", tmp_path)
    keyfile = str(fx / "installer-test.nmconnection")
    assert "does not support customizing network settings" in _gate(old, Customizations(network_keyfile=(keyfile,)))
    assert "does not support customizing network settings" in _gate(
        old, Customizations(network_nmstate=(str(fx / "installer-test-nmstate-json.json"),)))
    assert "does not support customizing installer configuration" in _gate(
        old, Customizations(dest_device="/dev/loop0"))
    assert _gate(old, Customizations(pre_install=(str(fx / "pre-install-1"),), live_karg_append=("foo",))) is None
    no_console = unpack(shared_fixtures, "embed-areas-2021-12.iso.xz", tmp_path)
    assert "does not support customizing the destination console" in _gate(
        no_console, Customizations(dest_console=("ttyS0",)))
    s390x = unpack(shared_fixtures, "embed-areas-2023-03.s390x.iso.xz", tmp_path)
    assert "does not support customizing live kernel arguments" in _gate(
        s390x, Customizations(live_karg_append=("foo",)))
    # the same through the CLI, and a real write into the s390x cdboot.img area
    fails(run_cli("iso", "customize", str(old), "--network-keyfile", keyfile),
          "error: This OS image does not support customizing network settings.")
    ok(run_cli("iso", "customize", str(s390x), "--dest-device", "/dev/dasda",
               "--pre-install", str(fx / "pre-install-1")))
    assert b'"/usr/local/bin/pre-install-pre-install-1"' in ok(run_cli("iso", "ignition", "show", str(s390x))).stdout
    syn = unpack(shared_fixtures, "synthetic.iso.xz", tmp_path)
    fails(run_cli("iso", "customize", str(syn), "--pre-install", str(fx / "pre-install-1")),
          "Unrecognized CoreOS ISO image")


# --- pxe customize ------------------------------------------------------------------------------

FEATURES = b'{"installer-config": true, "installer-config-directives": {"console": true}, "live-initrd-network": true}'


def live_initramfs(tmp_path: Path) -> Path:
    """A small stand-in for a live PXE initramfs: an uncompressed early archive followed by a
    gzip'ed main one carrying the live stamp and features.json (what pxe customize reads)."""
    early = cpio.newc_archive(cpio.members_from([("kernel/x86/microcode/GenuineIntel.bin", b"\0" * 64)]))
    main = cpio.newc_archive(cpio.members_from([
        ("etc/coreos-live-initramfs", b""), ("etc/coreos/features.json", FEATURES),
        ("usr/bin/true", b"\x7fELF")]))
    p = tmp_path / "src-initrd"
    p.write_bytes(early + gzip.compress(main, mtime=0))
    return p


def test_pxe_customize(tmp_path: Path, fx: Path, ignition_validate: str):
    src = live_initramfs(tmp_path)
    opts = full_opts(fx)
    out = tmp_path / "initrd"
    proc = ok(run_cli("pxe", "customize", str(src), "-o", str(out), *opts))
    assert b"PXE configuration must include kernel arguments: ignition.firstboot ignition.platform.id=metal" \
        in proc.stderr
    orig = src.read_bytes()
    data = out.read_bytes()
    assert data[:len(orig)] == orig
    assert data[len(orig) + 1:len(orig) + 5] == b"7zXZ"
    assert sha(ok(run_cli("pxe", "customize", str(src), "-o", "-", *opts)).stdout) == sha(data)
    members = cpio.read_initrd(data)
    validate(ignition_validate, members["config.ign"].data, tmp_path, "pxe.ign")
    assert members["config.ign"].data == cz.build_live_config(make(fx, *FLAGS))
    assert "etc/coreos-firstboot-network/nmstate-yl-eth2.nmconnection" in members
    assert "usr/bin/true" in members  # the original is still all there
    fails(run_cli("pxe", "customize", str(src), "-o", str(out), *opts), "file exists")
    fails(run_cli("pxe", "customize", str(out), "-o", str(tmp_path / "i2"), *opts), "already customized")
    empty = tmp_path / "empty-initrd"
    ok(run_cli("pxe", "ignition", "wrap", "-i", "/dev/null", "-o", str(empty)))
    fails(run_cli("pxe", "customize", str(empty), "-o", str(tmp_path / "i3")), "not a CoreOS live initramfs image")
    noop = tmp_path / "noop"
    ok(run_cli("pxe", "customize", str(src), "-o", str(noop)))
    assert noop.read_bytes() == orig
    # wrap / unwrap round trips
    assert ok(run_cli("pxe", "ignition", "unwrap", str(out))).stdout == members["config.ign"].data
    keyfiles = ok(run_cli("pxe", "network", "unwrap", str(out))).stdout.decode()
    assert "########## installer-test.nmconnection ##########" in keyfiles
    wrapped = tmp_path / "net.img"
    ok(run_cli("pxe", "network", "wrap", "-k", str(fx / "installer-test.nmconnection"), "-o", str(wrapped)))
    d = tmp_path / "x"
    d.mkdir()
    ok(run_cli("pxe", "network", "unwrap", str(wrapped), "-C", str(d)))
    assert (d / "installer-test.nmconnection").read_bytes() == (fx / "installer-test.nmconnection").read_bytes()
