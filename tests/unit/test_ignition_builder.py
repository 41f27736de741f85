"""ConfigBuilder: deterministic configs that the real ignition-validate accepts."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import decode
from imagebuilder.ignition.builder import ConfigBuilder
from imagebuilder.ignition.merge import merge_bytes
from imagebuilder.ignition.validate import validate_config

UNIT = "[Unit]\nDescription=hello\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "builder test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def full_builder(version: str, ca_pem: bytes) -> ConfigBuilder:
    b = ConfigBuilder(version)
    b.add_file("/etc/hostname", b"node1\n")
    b.add_file("/usr/local/bin/tool", b"#!/bin/sh\necho hi\n" * 50, mode=0o755, compress="gzip", user="core", group=0)
    b.add_file("/var/blob", bytes(range(256)), mode=0o600)
    b.add_directory("/var/lib/app", mode=0o750, user=1000, group="core")
    b.add_link("/etc/localtime", "/usr/share/zoneinfo/UTC")
    b.add_unit("hello.service", UNIT, enabled=True, dropins={"10-env.conf": "[Service]\nEnvironment=A=1\n"})
    b.add_unit("bad.service", mask=True)
    b.add_user("core", ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ2 me@host"], groups=["wheel"])
    b.add_user("core", ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ2 me@host", "ssh-rsa AAAAB3 other"])
    b.add_group("ops", gid=3000)
    b.add_ca(ca_pem)
    b.merge_config(json.dumps({"ignition": {"version": "3.3.0"},
                               "storage": {"files": [{"path": "/etc/merged", "contents": {"source": "data:,m"}}]}}).encode())
    b.add_kernel_args(should_exist=["console=ttyS0", "quiet"], should_not_exist=["rhgb"])
    return b


def test_output_is_deterministic_and_compact(ca_pem):
    a = full_builder("3.3.0", ca_pem).to_json()
    b = full_builder("3.3.0", ca_pem).to_json()
    assert a == b
    assert b"\n" not in a and b": " not in a
    pretty = full_builder("3.3.0", ca_pem).to_json(pretty=True)
    assert json.loads(pretty) == json.loads(a) and pretty.endswith(b"\n")
    top = list(json.loads(a))
    assert top == ["ignition", "storage", "systemd", "passwd", "kernelArguments"]
    assert list(json.loads(a)["ignition"])[0] == "version"


def test_contents_round_trip(ca_pem):
    cfg = json.loads(full_builder("3.3.0", ca_pem).to_json())
    files = {f["path"]: f for f in cfg["storage"]["files"]}
    assert decode.decode_contents(files["/etc/hostname"]["contents"]) == b"node1\n"
    assert files["/etc/hostname"]["contents"]["compression"] == ""  # explicit: never inherits gzip
    tool = files["/usr/local/bin/tool"]
    assert tool["contents"]["compression"] == "gzip" and tool["mode"] == 0o755
    assert decode.decode_contents(tool["contents"]) == b"#!/bin/sh\necho hi\n" * 50
    assert tool["user"] == {"name": "core"} and tool["group"] == {"id": 0}
    assert decode.decode_contents(files["/var/blob"]["contents"]) == bytes(range(256))
    # gzip with mtime 0: the gzip header's timestamp bytes are zero
    gz = decode.decode_data_url(tool["contents"]["source"])
    assert gz[4:8] == b"\0\0\0\0"
    assert cfg["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ2 me@host", "ssh-rsa AAAAB3 other"], "groups": ["wheel"]}]
    ca = cfg["ignition"]["security"]["tls"]["certificateAuthorities"]
    assert decode.decode_contents(ca[0]) == ca_pem
    ref = cfg["ignition"]["config"]["merge"][0]
    assert ref["compression"] == "gzip" and ref["source"].startswith("data:;base64,H4sI")
    child = json.loads(gzip.decompress(decode.decode_data_url(ref["source"])))
    assert child["storage"]["files"][0]["path"] == "/etc/merged"
    assert cfg["kernelArguments"] == {"shouldExist": ["console=ttyS0", "quiet"], "shouldNotExist": ["rhgb"]}


@pytest.mark.parametrize("version", ["3.3.0", "3.4.0", "3.6.0"])
def test_passes_our_validator(version, ca_pem):
    report = validate_config(full_builder(version, ca_pem).to_json(), source=version)
    assert report.errors == [], [p.format() for p in report.errors]


@pytest.mark.skipif(shutil.which("ignition-validate") is None, reason="ignition-validate not installed (apt-get install ignition)")
@pytest.mark.parametrize("version", ["3.0.0", "3.3.0"])
def test_passes_real_ignition_validate(version, ca_pem, tmp_path):
    b = full_builder("3.3.0", ca_pem) if version == "3.3.0" else ConfigBuilder("3.0.0")
    if version == "3.0.0":
        b.add_file("/etc/hostname", b"node\n")
        b.add_unit("hello.service", UNIT, enabled=True)
        b.add_user("core", ssh_keys=["ssh-ed25519 AAAA k"])
        b.add_ca(ca_pem)
        b.merge_config(b'{"ignition":{"version":"3.0.0"}}')
    f = tmp_path / "built.ign"
    f.write_bytes(b.to_json())
    p = subprocess.run(["ignition-validate", str(f)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr


def test_merged_child_is_rendered_by_merge(ca_pem):
    built = full_builder("3.3.0", ca_pem).to_json()
    out = merge_bytes(built, []).config
    assert "/etc/merged" in [f["path"] for f in out["storage"]["files"]]


def test_errors():
    b = ConfigBuilder("3.3.0")
    b.add_file("/etc/a", b"")
    with pytest.raises(InvalidConfigError, match="already used by a file"):
        b.add_directory("/etc/a")
    with pytest.raises(InvalidConfigError, match="not absolute"):
        b.add_file("etc/x", b"")
    with pytest.raises(InvalidConfigError, match="not fully simplified"):
        b.add_file("/etc/../x", b"")
    with pytest.raises(InvalidConfigError, match="illegal file mode"):
        b.add_file("/etc/m", b"", mode=0o17777)
    with pytest.raises(InvalidConfigError, match="compression"):
        b.add_file("/etc/z", b"", compress="xz")
    with pytest.raises(InvalidConfigError, match=".conf"):
        b.add_unit("x.service", dropins={"bad": ""})
    b.add_unit("y.service")
    with pytest.raises(InvalidConfigError, match="already defined"):
        b.add_unit("y.service")
    with pytest.raises(InvalidConfigError, match="both exist and not exist"):
        b.add_kernel_args(["a"], ["a"])
    with pytest.raises(InvalidConfigError, match="no PEM certificate"):
        b.add_ca(b"not a cert")
    with pytest.raises(InvalidConfigError, match="not valid JSON"):
        b.merge_config(b"{")
    with pytest.raises(InvalidConfigError, match="needs Ignition spec 3.3.0"):
        ConfigBuilder("3.2.0").add_kernel_args(["quiet"])
    with pytest.raises(InvalidConfigError, match="needs Ignition spec 3.1.0"):
        ConfigBuilder("3.0.0").add_file("/x", b"", compress="gzip")
    with pytest.raises(InvalidConfigError, match="unsupported Ignition spec"):
        ConfigBuilder("2.2.0")


def test_empty_builder_is_minimal():
    assert ConfigBuilder("3.3.0").to_json() == b'{"ignition":{"version":"3.3.0"}}'
