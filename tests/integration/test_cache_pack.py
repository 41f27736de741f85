"""Store object <-> OCI artifact blobs without a registry (GNU tar, zstd and ssh-keygen are
real): hostile entries are refused before anything leaves the temp directory, and SSH
signatures interoperate with ``ssh-keygen -Y`` itself."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from imagebuilder.cache import signing
from imagebuilder.cache.errors import RemoteIntegrityError
from imagebuilder.cache.oci_artifact import (
    ANN_ID,
    ARTIFACT_TYPE,
    CHUNK_LAYER,
    CONFIG_TYPE,
    MANIFEST_TYPE,
    TREE_LAYER,
    Layout,
    canonical,
    signed_payload,
)
from imagebuilder.cache.pack import CHUNK, FORMAT, pack, unpack
from imagebuilder.errors import UserInputError

OID = hashlib.sha256(b"stage").hexdigest()


def tar_bytes(members: list[tuple[str, str, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def hostile_layout(root: Path, members, *, declared: int | None = None, files=(),
                   chunks=(), oid: str = OID, config_extra: dict | None = None) -> Layout:
    """A layout whose digests are all right, with the given tar members, large files and
    chunk layers [(file index, extents, raw data)]."""
    layout = Layout(root)
    raw = tar_bytes(members)
    cz = zstandard.ZstdCompressor()
    layers = [layout.add_bytes(cz.compress(raw), TREE_LAYER)]
    entries = [{"kind": "tree", "size": len(raw) if declared is None else declared}]
    for index, extents, data in chunks:
        layers.append(layout.add_bytes(cz.compress(data), CHUNK_LAYER))
        entries.append({"kind": "chunk", "file": index, "extents": extents})
    config = {"format": FORMAT, "id": oid, "object": {"type": "t"}, "records": {},
              "chunk_size": CHUNK, "layers": entries, "files": list(files)}
    config.update(config_extra or {})
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                "config": layout.add_bytes(canonical(config), CONFIG_TYPE), "layers": layers,
                "annotations": {ANN_ID: oid}}
    layout.set_ref(oid, layout.add_bytes(canonical(manifest), MANIFEST_TYPE))
    return layout


def large_file(path: str, size: int) -> dict:
    return {"path": path, "size": size, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0,
            "xattrs": {}}


@pytest.mark.parametrize("members, files, chunks, declared, message", [
    ([("../evil", "file", b"x")], (), (), None, "'..'"),
    ([("a", "symlink", "/tmp"), ("a/evil", "file", b"x")], (), (), None, "through the symlink"),
    ([("up", "symlink", "../../..")], (), (), None, "leaves the root"),
    ([("h", "hardlink", "/etc/passwd")], (), (), None, "absolute"),
    # decompression bound: the tar is larger than the config says
    ([("big", "file", b"\0" * 100_000)], (), (), 10_240, "more than its declared"),
    # large files: escaping, through a symlink, over a tar member, chunks of the wrong length
    ([("d", "dir", b"")], [large_file("../x", 10)], [(0, [[0, 10]], b"0123456789")], None, "'..'"),
    ([("a", "symlink", "/tmp")], [large_file("a/x", 10)], [(0, [[0, 10]], b"0123456789")], None,
     "through the symlink"),
    ([("f", "file", b"x")], [large_file("f", 10)], [(0, [[0, 10]], b"0123456789")], None,
     "also in the tree"),
    ([], [large_file("x", 10)], [(0, [[0, 10]], b"01234")], None, "is short"),
    ([], [large_file("x", 10)], [(0, [[0, 4]], b"0123456789")], None, "longer than"),
    ([], [large_file("x", 10)], [(0, [[8, 4]], b"0123")], None, "bad extent"),
    ([], [large_file("x", 10), large_file("./x", 10)], (), None, "repeated path"),
])
def test_hostile_entries_are_refused(tmp_path, members, files, chunks, declared, message):
    layout = hostile_layout(tmp_path / "layout", members, files=files, chunks=chunks,
                            declared=declared)
    dest = tmp_path / "box" / "tree"
    dest.parent.mkdir()
    with pytest.raises(RemoteIntegrityError, match=message):
        unpack(layout, OID, dest)
    assert not (tmp_path / "box" / "evil").exists() and not (tmp_path / "box" / "x").exists()
    assert not Path("/tmp/evil").exists() and not Path("/tmp/x").exists()


def test_config_for_another_stage_is_refused(tmp_path):
    layout = hostile_layout(tmp_path / "layout", [], config_extra={"id": "0" * 64})
    with pytest.raises(RemoteIntegrityError, match="another stage"):
        unpack(layout, OID, tmp_path / "tree")


def test_a_blob_changed_in_the_layout_is_refused(tmp_path):
    tree = tmp_path / "obj" / "tree"
    tree.mkdir(parents=True)
    (tree / "f").write_bytes(os.urandom(50_000))
    (tmp_path / "obj" / "object.json").write_text(json.dumps({"type": "t"}))
    layout = Layout(tmp_path / "layout")
    packed = pack(tmp_path / "obj", OID, layout, tmp_path)
    blob = layout.blob_path(packed.manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0x40
    blob.write_bytes(bytes(data))
    with pytest.raises(RemoteIntegrityError, match="failed verification|not a valid"):
        unpack(layout, OID, tmp_path / "out")


def test_private_objects_are_never_packed(tmp_path):
    (tmp_path / "obj" / "tree").mkdir(parents=True)
    (tmp_path / "obj" / "object.json").write_text(json.dumps({"type": "t", "private": True}))
    with pytest.raises(Exception, match="private"):
        pack(tmp_path / "obj", OID, Layout(tmp_path / "layout"), tmp_path)
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []


def test_packing_is_deterministic(tmp_path):
    """The same object packs to the same blobs, so a re-push uploads nothing new."""
    tree = tmp_path / "obj" / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(os.urandom(10_000))
    with open(tree / "img", "wb") as f:
        f.truncate(CHUNK * 2)
        f.write(b"a" * 4096)
    (tmp_path / "obj" / "object.json").write_text(json.dumps({"type": "t"}))
    one = pack(tmp_path / "obj", OID, Layout(tmp_path / "l1"), tmp_path)
    two = pack(tmp_path / "obj", OID, Layout(tmp_path / "l2"), tmp_path)
    assert one.digest == two.digest and len(one.manifest["layers"]) == 2


# ------------------------------------------------------------------------------ signatures
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name, kind in (("ed", "ed25519"), ("other", "ed25519"), ("rsa", "rsa")):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(d / name)], check=True)
    return d


def test_verify_accepts_what_ssh_keygen_signs(tmp_path, keys):
    data = signed_payload(OID, "sha256:" + "1" * 64)
    (tmp_path / "payload").write_bytes(data)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "imagebuilder", "-f", str(keys / "ed"),
                    str(tmp_path / "payload")], check=True)
    sig = (tmp_path / "payload.sig").read_text()
    assert "Good" in signing.verify(data, sig, [keys / "ed.pub"])
    assert "Good" in signing.verify(data, sig, [keys / "other.pub", keys / "ed.pub"])
    with pytest.raises(signing.BadSignature):
        signing.verify(data + b"x", sig, [keys / "ed.pub"])
    with pytest.raises(signing.BadSignature):
        signing.verify(data, sig, [keys / "other.pub"])
    # another namespace (a git commit signature, say) is not an imagebuilder signature
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(keys / "ed"),
                    "-O", "hashalg=sha512", str(tmp_path / "payload")], input=b"y\n", check=True)
    with pytest.raises(signing.BadSignature):
        signing.verify(data, (tmp_path / "payload.sig").read_text(), [keys / "ed.pub"])


def test_ssh_keygen_accepts_what_sign_makes(tmp_path, keys):
    data = b"some bytes\n"
    sig = signing.sign(data, keys / "ed")
    (tmp_path / "sig").write_text(sig)
    (tmp_path / "allowed").write_text(
        'imagebuilder namespaces="imagebuilder" ' + (keys / "ed.pub").read_text())
    proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-n", "imagebuilder", "-I", "imagebuilder",
                           "-f", str(tmp_path / "allowed"), "-s", str(tmp_path / "sig")],
                          input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_only_ed25519_keys_are_trusted(keys, tmp_path):
    with pytest.raises(UserInputError, match="Ed25519"):
        signing.load_public_key(keys / "rsa.pub")
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(UserInputError, match="junk.pub"):
        signing.load_public_key(tmp_path / "junk.pub")
