"""Remote cache settings, manifest validation and skopeo error classification (no tools)."""

from __future__ import annotations

import json

import pytest

from imagebuilder.cache.errors import (
    RemoteAuthError,
    RemoteCacheError,
    RemoteIntegrityError,
    RemoteTLSError,
    RemoteUnavailable,
)
from imagebuilder.cache.oci_artifact import (
    ANN_ID,
    ANN_SIGNATURE,
    ANN_SUBJECT,
    ARTIFACT_TYPE,
    CHUNK_LAYER,
    CONFIG_TYPE,
    MANIFEST_TYPE,
    SIGNATURE_TYPE,
    TREE_LAYER,
    parse_signature_manifest,
    parse_stage_manifest,
    signature_tag,
)
from imagebuilder.cache.remote import RemoteSpec, parse_url
from imagebuilder.cache.skopeo import _last_message, classify, is_local_host
from imagebuilder.errors import UserInputError

OID = "ab" * 32
D = "sha256:" + "cd" * 32


@pytest.mark.parametrize("url, host, repo", [
    ("oci://registry.example.com/ci/imagebuilder", "registry.example.com", "ci/imagebuilder"),
    ("oci://127.0.0.1:5000/cache", "127.0.0.1:5000", "cache"),
    ("oci://[::1]:5000/a/b-c/d_e.f", "[::1]:5000", "a/b-c/d_e.f"),
    ("oci://localhost/cache/", "localhost", "cache"),
])
def test_parse_url(url, host, repo):
    assert parse_url(url) == (host, repo)


@pytest.mark.parametrize("url, message", [
    ("https://registry.example.com/ci", "expected oci://"),
    ("oci://registry.example.com", "bad repository"),
    ("oci://registry.example.com/CI/Upper", "bad repository"),
    ("oci://registry.example.com/a//b", "bad repository"),
    ("oci://-bad-/x", "bad registry host"),
    ("oci://host:99999/x", "bad port"),
    ("oci://user:pw@host/x", "bad registry host"),
])
def test_bad_urls(url, message):
    with pytest.raises(UserInputError, match=message):
        parse_url(url)


def test_spec_checks(tmp_path):
    with pytest.raises(UserInputError, match="read or readwrite"):
        RemoteSpec("oci://h/r", mode="write")
    with pytest.raises(UserInputError, match="not localhost"):
        RemoteSpec("oci://10.0.0.1:5000/r", insecure=True)
    RemoteSpec("oci://localhost:5000/r", insecure=True)
    with pytest.raises(UserInputError, match="--cache-remote-auth .*not found"):
        RemoteSpec("oci://h/r", auth_file=tmp_path / "nope.json")
    with pytest.raises(UserInputError, match="cannot read public key"):
        RemoteSpec("oci://h/r", trust=(tmp_path / "nope.pub",))


@pytest.mark.parametrize("host, local", [("localhost:5000", True), ("127.0.0.1", True),
                                         ("127.5.0.1:80", True), ("[::1]:5000", True),
                                         ("localhost.example.com", False), ("10.0.0.1:5000", False)])
def test_is_local_host(host, local):
    assert is_local_host(host) is local


# stderr as skopeo 1.9 prints it
@pytest.mark.parametrize("stderr, cls", [
    ('time="x" level=fatal msg="Error parsing image name \\"docker://h/r:t\\": reading manifest t '
     'in h/r: unauthorized: authentication required"', RemoteAuthError),
    ('time="x" level=fatal msg="pinging container registry h: Get \\"https://h/v2/\\": x509: '
     'certificate signed by unknown authority"', RemoteTLSError),
    ('time="x" level=fatal msg="pinging container registry h: Get \\"https://h/v2/\\": http: '
     'server gave HTTP response to HTTPS client"', RemoteTLSError),
    ('time="x" level=fatal msg="pinging container registry h: Get \\"https://h/v2/\\": dial tcp '
     '127.0.0.1:5098: connect: connection refused"', RemoteUnavailable),
    ('time="x" level=fatal msg="writing blob: happened during read: Digest did not match, '
     'expected sha256:1, got sha256:2"', RemoteIntegrityError),
    ('time="x" level=fatal msg="something else"', RemoteCacheError),
])
def test_classify(stderr, cls):
    assert classify(stderr) is cls


def test_last_message_unwraps_logrus():
    err = ('Getting image source signatures\ntime="2026-01-01T00:00:00Z" level=fatal '
           'msg="reading manifest t in h/r: manifest unknown: manifest unknown"\n')
    assert _last_message(err) == "reading manifest t in h/r: manifest unknown: manifest unknown"


def manifest(**over) -> dict:
    m = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
         "config": {"mediaType": CONFIG_TYPE, "digest": D, "size": 10},
         "layers": [{"mediaType": TREE_LAYER, "digest": D, "size": 5},
                    {"mediaType": CHUNK_LAYER, "digest": D, "size": 5}],
         "annotations": {ANN_ID: OID}}
    m.update(over)
    return m


def test_parse_stage_manifest():
    assert parse_stage_manifest(json.dumps(manifest()).encode(), OID, "x")["layers"]


@pytest.mark.parametrize("over, message", [
    ({"artifactType": "application/vnd.other"}, "artifactType"),
    ({"mediaType": "application/vnd.docker.distribution.manifest.v2+json"}, "not an OCI"),
    ({"annotations": {ANN_ID: "ff" * 32}}, "not for stage"),
    ({"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 1}},
     "unexpected media type"),
    ({"layers": [{"mediaType": TREE_LAYER, "digest": "sha512:00", "size": 1}]}, "bad digest"),
    ({"layers": [{"mediaType": TREE_LAYER, "digest": D, "size": -1}]}, "bad size"),
    ({"layers": [{"mediaType": TREE_LAYER, "digest": D, "size": True}]}, "bad size"),
    ({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D, "size": 1}]},
     "unexpected media type"),
    ({"layers": "none"}, "bad layer list"),
])
def test_bad_manifests(over, message):
    with pytest.raises(RemoteIntegrityError, match=message) as e:
        parse_stage_manifest(json.dumps(manifest(**over)).encode(), OID, "remote")
    assert e.value.exit_code == 3


def test_bad_json_and_huge_manifests():
    with pytest.raises(RemoteIntegrityError, match="not JSON"):
        parse_stage_manifest(b"\xff{", OID, "x")
    with pytest.raises(RemoteIntegrityError, match="too large"):
        parse_stage_manifest(b" " * (5 << 20), OID, "x")


def test_signature_manifest_must_match_its_subject():
    sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"
    doc = {"artifactType": SIGNATURE_TYPE,
           "annotations": {ANN_ID: OID, ANN_SUBJECT: D, ANN_SIGNATURE: sig}}
    assert parse_signature_manifest(json.dumps(doc).encode(), OID, D, "x") == sig
    with pytest.raises(RemoteIntegrityError, match="another entry"):
        parse_signature_manifest(json.dumps(doc).encode(), OID, "sha256:" + "00" * 32, "x")
    assert signature_tag(D) == "sha256-" + "cd" * 32 + ".sig"
