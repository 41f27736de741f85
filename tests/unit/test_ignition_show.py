"""ignition show: decoding, remote references, certificate expiry warnings, text and --json output."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import decode
from imagebuilder.ignition.certs import config_certificates, expiry_warnings
from imagebuilder.ignition.show import describe

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "ignition" / "example.ign"
NOW = dt.datetime.now(dt.timezone.utc)


def make_cert(cn: str, not_after: dt.datetime, not_before: dt.datetime | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or (NOW - dt.timedelta(days=400)))
            .not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pems() -> dict[str, bytes]:
    return {
        "expired": make_cert("expired CA", NOW - dt.timedelta(days=2)),
        "soon": make_cert("expiring CA", NOW + dt.timedelta(hours=2)),
        "good": make_cert("good CA", NOW + dt.timedelta(days=365)),
    }


def b64(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


def config_with_certs(pems: dict[str, bytes]) -> bytes:
    cfg = {
        "ignition": {"version": "3.3.0", "security": {"tls": {"certificateAuthorities": [
            {"source": b64(pems["expired"])},
            {"source": b64(gzip.compress(pems["good"], mtime=0)), "compression": "gzip"},
        ]}}},
        "storage": {"files": [
            {"path": "/etc/pki/ca-trust/source/anchors/site.pem", "mode": 420,
             "contents": {"source": b64(pems["soon"] + pems["good"])}},
        ]},
    }
    return json.dumps(cfg).encode()


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize("url,expected", [
    ("data:,", b""),
    ("data:,hello%20world%0A", b"hello world\n"),
    ("data:text/plain;charset=utf-8,caf%C3%A9", "café".encode()),
    ("data:;base64,aGVsbG8=", b"hello"),
    ("data:;base64,aGVsbG8", b"hello"),  # missing padding tolerated
    ("data:application/octet-stream;base64,AAEC", b"\x00\x01\x02"),
    ("data:text/plain;base64,aGV%2BsbG8=", base64.b64decode("aGV+sbG8=")),
])
def test_decode_data_url(url, expected):
    assert decode.decode_data_url(url) == expected


@pytest.mark.parametrize("url", ["data:nocomma", "https://x/y", "data:;base64,@@@"])
def test_decode_data_url_errors(url):
    with pytest.raises(InvalidConfigError):
        decode.decode_data_url(url)


def test_decode_contents_gzip_remote_and_missing():
    blob = gzip.compress(b"zipped\n", mtime=0)
    assert decode.decode_contents({"source": b64(blob), "compression": "gzip"}) == b"zipped\n"
    assert decode.decode_contents({"source": b64(blob)}) == blob
    assert decode.decode_contents({"source": "https://example.com/x"}) is None
    assert decode.decode_contents({}) is None
    with pytest.raises(InvalidConfigError, match="not valid gzip"):
        decode.decode_contents({"source": "data:,plain", "compression": "gzip"})


def test_encode_round_trip():
    for data in (b"", b"plain text\n", bytes(range(256)), "ünïcode ✓".encode()):
        assert decode.decode_data_url(decode.encode_data_url(data)) == data


# --------------------------------------------------------------------------- certificates


def test_certificate_expiry_warnings(pems):
    certs = config_certificates(json.loads(config_with_certs(pems)))
    assert [c.subject for c in certs] == ["CN=expired CA", "CN=good CA", "CN=expiring CA", "CN=good CA"]
    warnings = expiry_warnings(certs)
    assert len(warnings) == 2
    assert "expired CA" in warnings[0] and "expired on" in warnings[0]
    assert "certificateAuthorities[0]" in warnings[0]
    assert "expiring CA" in warnings[1] and "expires within 24 hours" in warnings[1]
    assert "/etc/pki/ca-trust/source/anchors/site.pem" in warnings[1]


def test_no_warning_for_valid_certificate(pems):
    cfg = {"ignition": {"version": "3.3.0", "security": {"tls": {"certificateAuthorities": [
        {"source": b64(pems["good"])}]}}}}
    assert expiry_warnings(config_certificates(cfg)) == []


# --------------------------------------------------------------------------- describe


def test_describe_example_fixture():
    doc = describe(EXAMPLE.read_bytes(), str(EXAMPLE)).doc
    files = {f["path"]: f for f in doc["files"]}
    assert files["/etc/hostname"]["contents"]["text"] == "imagebuilder-demo\n"
    assert files["/etc/motd"]["contents"]["compression"] == "gzip"
    assert "Welcome" in files["/etc/motd"]["contents"]["text"]
    assert files["/etc/hostname"]["mode"] == "0644"
    assert doc["directories"] == [{"path": "/var/lib/demo", "mode": "0755"}]
    assert doc["units"][0]["name"] == "hello.service" and doc["units"][0]["enabled"] is True
    assert "ExecStart=/bin/echo" in doc["units"][0]["contents"]
    assert doc["users"] == [{"name": "core", "sshKeys": 1, "sshKeyComments": ["demo@imagebuilder"]}]
    assert doc["kernelArguments"] == {"shouldExist": ["quiet"]}
    assert doc["warnings"] == []


def test_describe_binary_remote_and_references():
    binary = bytes(range(256)) * 4
    child = json.dumps({"ignition": {"version": "3.3.0"}}).encode()
    cfg = {
        "ignition": {"version": "3.3.0", "config": {"merge": [
            {"source": "https://example.com/extra.ign"},
            {"source": b64(gzip.compress(child, mtime=0)), "compression": "gzip"}]}},
        "storage": {
            "files": [
                {"path": "/bin/blob", "mode": 493, "contents": {"source": b64(binary)}},
                {"path": "/etc/remote", "contents": {"source": "s3://bucket/key",
                                                     "verification": {"hash": "sha512-" + "a" * 128}}},
                {"path": "/etc/tftp", "contents": {"source": "tftp://10.0.0.1/file"}},
            ],
            "links": [{"path": "/etc/l", "target": "/bin/blob", "hard": True}],
            "luks": [{"name": "root", "device": "/dev/vda4", "keyFile": {"source": "data:,topsecret"},
                      "clevis": {"tpm2": True}}],
            "filesystems": [{"device": "/dev/mapper/root", "format": "xfs", "label": "root", "wipeFilesystem": True}],
            "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/vdb", "/dev/vdc"]}],
            "disks": [{"device": "/dev/vdb", "wipeTable": True, "partitions": [{"number": 1, "label": "p1"}]}],
        },
        "passwd": {"users": [{"name": "alice", "groups": ["wheel"], "passwordHash": "$6$x",
                              "sshAuthorizedKeys": ["ssh-ed25519 AAAA alice@laptop", "ssh-rsa BBBB"]}],
                   "groups": [{"name": "ops", "gid": 3000}]},
    }
    doc = describe(json.dumps(cfg).encode(), "cfg.ign").doc
    blob = doc["files"][0]["contents"]
    assert blob == {"kind": "inline", "size": 1024, "sha256": hashlib.sha256(binary).hexdigest(), "binary": True}
    remote = doc["files"][1]["contents"]
    assert remote["kind"] == "remote" and remote["scheme"] == "s3" and remote["verification"].startswith("sha512-")
    assert doc["files"][2]["contents"]["scheme"] == "tftp"
    merge = doc["ignition"]["merge"]
    assert merge[0] == {"kind": "remote", "source": "https://example.com/extra.ign", "scheme": "https"}
    assert merge[1]["kind"] == "inline" and json.loads(merge[1]["text"]) == {"ignition": {"version": "3.3.0"}}
    luks = doc["luks"][0]
    assert "text" not in luks["keyFile"] and luks["keyFile"]["size"] == len("topsecret")
    assert "topsecret" not in json.dumps(doc)
    assert doc["users"][0]["sshKeys"] == 2
    assert doc["users"][0]["sshKeyComments"] == ["alice@laptop", ""]
    assert doc["users"][0]["passwordHash"] == "set"
    assert doc["raid"][0]["devices"] == ["/dev/vdb", "/dev/vdc"]
    assert doc["disks"][0]["partitions"] == [{"number": 1, "label": "p1"}]
    assert any("extra.ign has no verification hash" in w for w in doc["warnings"])


def test_describe_invalid_config_warns_but_shows():
    cfg = {"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "relative", "contents": {"source": "data:,x"}}]}}
    report = describe(json.dumps(cfg).encode(), "bad.ign")
    assert report.doc["files"][0]["contents"]["text"] == "x"
    assert report.warnings[0].startswith("config is not valid")


def test_undecodable_contents_are_reported_not_fatal():
    cfg = {"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/a", "contents": {"source": "data:,not-gzip", "compression": "gzip"}},
        {"path": "/b", "contents": {"source": "data:,fine"}}]}}
    report = describe(json.dumps(cfg).encode(), "c.ign")
    assert report.doc["files"][0]["contents"]["kind"] == "undecodable"
    assert report.doc["files"][1]["contents"]["text"] == "fine"
    assert any("storage.files[0].contents" in w and "not valid gzip" in w for w in report.warnings)


# --------------------------------------------------------------------------- CLI


def test_cli_show_text(cli):
    p = cli("ignition", "show", str(EXAMPLE))
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    for needle in ("Files (2)", "/etc/hostname", "imagebuilder-demo", "Welcome to an imagebuilder demo",
                   "hello.service", "ExecStart=/bin/echo hello from ignition", "core: 1 SSH key (demo@imagebuilder)",
                   "should exist: quiet", "/var/lib/demo"):
        assert needle in out, needle
    assert "\x1b[" not in out  # plain when not a terminal


def test_cli_show_json_and_cert_warnings(cli, tmp_path, pems):
    f = tmp_path / "certs.ign"
    f.write_bytes(config_with_certs(pems))
    p = cli("ignition", "show", "--json", str(f))
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    assert len(doc["warnings"]) == 2
    assert len(doc["certificates"]) == 4
    err = p.stderr.decode()
    assert "expired CA" in err and "expiring CA" in err and "good CA" not in err
    # text mode warns on stderr too
    p = cli("ignition", "show", str(f))
    assert p.returncode == 0 and b"expired on" in p.stderr


def test_cli_show_stdin_and_errors(cli):
    p = cli("ignition", "show", "-", input=EXAMPLE.read_bytes())
    assert p.returncode == 0 and b"hello.service" in p.stdout
    p = cli("ignition", "show", "-", input=b"{not json")
    assert p.returncode == 3 and b"not valid JSON" in p.stderr
    p = cli("ignition", "show", "/nonexistent.ign")
    assert p.returncode == 2


def test_cli_show_storage_sections(cli):
    corpus = EXAMPLE.parent / "merge"
    for case, needles in {
        "08-luks-clevis": ["LUKS devices (2)", "root", "options: --cipher aes-xts-plain64", "keyFile: 10 bytes, sha256"],
        "06-disks-partitions": ["Disks (2)", "/dev/vda", "partition number=4, label=root, sizeMiB=8192"],
        "09-raid": ["RAID (2)", "md-data", "devices: /dev/vdb /dev/vdc"],
        "07-filesystems": ["Filesystems (2)", "/dev/disk/by-partlabel/var", "format: xfs", "mountOptions: noatime"],
        "02-node-path-collisions": ["Links (2)", "/etc/c -> /etc/a (symlink)", "Directories (2)"],
    }.items():
        p = cli("ignition", "show", str(corpus / case / "base.ign"))
        assert p.returncode == 0, p.stderr.decode()
        out = p.stdout.decode()
        for needle in needles:
            assert needle in out, (case, needle, out)
        assert "secret-key" not in out  # LUKS key material is never printed
