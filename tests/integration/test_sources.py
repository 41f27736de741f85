"""Source stages and their libraries: safe tarball extraction, OCI layers with whiteouts,
directory copies, and a real mmdebstrap bootstrap (network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from imagebuilder.errors import BadImageError
from imagebuilder.sources import directory, oci, tarball
from imagebuilder.sources.tarball import UnsafeArchiveError

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- tar helpers

def _info(name: str, type_=tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mtime = kw.pop("mtime", 1700000000)
    ti.mode = kw.pop("mode", 0o755 if type_ == tarfile.DIRTYPE else 0o644)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def make_tar(entries: list[tuple], *, fmt=tarfile.PAX_FORMAT) -> bytes:
    """entries: (name, kind, data_or_target, extra-attrs)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, payload, *extra in entries:
            attrs = extra[0] if extra else {}
            if kind == "dir":
                tar.addfile(_info(name, tarfile.DIRTYPE, **attrs))
            elif kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                tar.addfile(_info(name, size=len(data), **attrs), io.BytesIO(data))
            elif kind == "symlink":
                tar.addfile(_info(name, tarfile.SYMTYPE, linkname=payload, **attrs))
            elif kind == "hardlink":
                tar.addfile(_info(name, tarfile.LNKTYPE, linkname=payload, **attrs))
            elif kind == "chr":
                tar.addfile(_info(name, tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666))
            elif kind == "fifo":
                tar.addfile(_info(name, tarfile.FIFOTYPE))
    return buf.getvalue()


ROOTFS = [
    ("./", "dir", None),
    ("./etc/", "dir", None),
    ("./etc/os-release", "file", "ID=test\n", {"uid": 0, "gid": 0}),
    ("./etc/shadow", "file", "root:*:1::::::\n", {"mode": 0o640, "uid": 0, "gid": 42}),
    ("./etc/localtime", "symlink", "/usr/share/zoneinfo/UTC"),
    ("./usr/", "dir", None),
    ("./usr/bin/", "dir", None),
    ("./usr/bin/su", "file", "#!/bin/sh\n", {"mode": 0o4755}),
    ("./usr/bin/sudoedit", "hardlink", "usr/bin/su"),
    ("./usr/bin/cap", "file", "x", {"pax_headers": {"SCHILY.xattr.user.origin": "tarball"}}),
    ("./bin", "symlink", "usr/bin"),
    ("./dev/", "dir", None),
    ("./dev/null", "chr", None),
    ("./run/fifo", "fifo", None),
    ("/abs/leading-slash", "file", "ok"),
]


def test_tarball_extracts_a_rootfs_faithfully(tmp_path):
    tarpath = tmp_path / "rootfs.tar.gz"
    tarpath.write_bytes(gzip.compress(make_tar(ROOTFS)))
    root = tmp_path / "root"
    stats = tarball.extract(tarpath, root, expected_sha256=tarball.file_sha256(tarpath))
    assert (root / "etc" / "os-release").read_text() == "ID=test\n"
    assert os.readlink(root / "etc" / "localtime") == "/usr/share/zoneinfo/UTC"  # kept, not followed
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.stat(root / "usr/bin/su").st_mode & 0o7777 == 0o4755
    assert os.stat(root / "usr/bin/su").st_ino == os.stat(root / "usr/bin/sudoedit").st_ino
    assert os.getxattr(root / "usr/bin/cap", "user.origin") == b"tarball"
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert (root / "abs" / "leading-slash").read_text() == "ok"
    assert os.stat(root / "etc").st_mtime == 1700000000
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.lstat(root / "dev/null").st_mode)
        assert os.stat(root / "etc/shadow").st_gid == 42
        assert stats.skipped_devices == []
    else:
        assert stats.skipped_devices == ["dev/null"]


def test_tarball_sha256_mismatch_is_refused(tmp_path):
    tarpath = tmp_path / "r.tar"
    tarpath.write_bytes(make_tar(ROOTFS[:3]))
    with pytest.raises(BadImageError, match="sha256 mismatch"):
        tarball.extract(tarpath, tmp_path / "root", expected_sha256="0" * 64)


@pytest.mark.parametrize("entries, message", [
    ([("../evil", "file", "x")], "'..'"),
    ([("etc/../../evil", "file", "x")], "'..'"),
    ([("./a/", "dir", None), ("./a/../../evil", "file", "x")], "'..'"),
    ([("./passwd", "hardlink", "/etc/passwd")], "is absolute"),
    ([("./passwd", "hardlink", "../../etc/passwd")], "'..'"),
    ([("./up", "symlink", "../../../etc")], "leaves the root"),
    ([("./a/", "dir", None), ("./a/up", "symlink", "../../etc")], "leaves the root"),
    # an absolute symlink is fine, but nothing may be written through it
    ([("./etc", "symlink", str("/tmp")), ("./etc/pwned", "file", "x")], "through the symlink"),
    ([("./l", "symlink", "/etc/passwd"), ("./h", "hardlink", "l")], "points at the symlink"),
])
def test_tarball_traversal_attempts_are_rejected(tmp_path, entries, message):
    tarpath = tmp_path / "evil.tar"
    tarpath.write_bytes(make_tar(entries))
    root = tmp_path / "deep" / "root"
    with pytest.raises(UnsafeArchiveError, match=message):
        tarball.extract(tarpath, root)
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/pwned").exists()


def test_tarball_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    tarpath = tmp_path / "t.tar"
    tarpath.write_bytes(make_tar([("./f", "symlink", str(victim)), ("./f", "file", "new")]))
    tarball.extract(tarpath, tmp_path / "root")
    assert victim.read_text() == "precious"
    assert (tmp_path / "root" / "f").read_text() == "new" and not (tmp_path / "root" / "f").is_symlink()


# ----------------------------------------------------------------------------- OCI

LAYER1 = [
    ("etc/", "dir", None), ("etc/keep", "file", "keep"), ("etc/gone", "file", "gone"),
    ("opt/", "dir", None), ("opt/old1", "file", "1"), ("opt/sub/", "dir", None), ("opt/sub/old2", "file", "2"),
    ("usr/", "dir", None), ("usr/lib/", "dir", None), ("usr/lib/dir-gone/", "dir", None),
    ("usr/lib/dir-gone/f", "file", "f"),
]
LAYER2 = [
    ("etc/", "dir", None), ("etc/.wh.gone", "file", ""), ("etc/new", "file", "new"),
    ("opt/", "dir", None), ("opt/new", "file", "kept: same layer as the opaque marker"),
    ("opt/.wh..wh..opq", "file", ""),
    ("usr/lib/.wh.dir-gone", "file", ""),
]
LAYER3 = [("etc/keep", "file", "keep v3")]


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_oci_layout(path: Path, layers: list[bytes], *, gzip_layers=True, nested_index=False) -> Path:
    path.mkdir()
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = _blob(path, json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode())
    lay = []
    for data in layers:
        blob = gzip.compress(data, mtime=0) if gzip_layers else data
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
        lay.append(_blob(path, blob) | {"mediaType": mt})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config | {"mediaType": "application/vnd.oci.image.config.v1+json"}, "layers": lay}
    mdesc = _blob(path, json.dumps(manifest).encode()) | {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "platform": {"architecture": "amd64", "os": "linux"}}
    other = dict(mdesc, platform={"architecture": "arm64", "os": "linux"})
    if nested_index:
        inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [mdesc, other]}
        idesc = _blob(path, json.dumps(inner).encode()) | {"mediaType": "application/vnd.oci.image.index.v1+json"}
        index = {"schemaVersion": 2, "manifests": [idesc]}
    else:
        index = {"schemaVersion": 2, "manifests": [mdesc]}
    (path / "index.json").write_text(json.dumps(index))
    return path


def make_docker_archive(path: Path, layers: list[bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        names = []
        for i, data in enumerate(layers):
            name = f"layer{i}/layer.tar"
            names.append(name)
            tar.addfile(_info(name, size=len(data)), io.BytesIO(data))
        cfg = b'{"architecture": "amd64", "os": "linux"}'
        tar.addfile(_info("config.json", size=len(cfg)), io.BytesIO(cfg))
        man = json.dumps([{"Config": "config.json", "RepoTags": ["test:latest"], "Layers": names}]).encode()
        tar.addfile(_info("manifest.json", size=len(man)), io.BytesIO(man))
    path.write_bytes(buf.getvalue())
    return path


def assert_flattened(root: Path) -> None:
    assert (root / "etc" / "keep").read_text() == "keep v3"
    assert not (root / "etc" / "gone").exists()  # .wh.gone
    assert (root / "etc" / "new").read_text() == "new"
    assert sorted(p.name for p in (root / "opt").iterdir()) == ["new"]  # opaque: lower content hidden
    assert not (root / "usr" / "lib" / "dir-gone").exists()  # whiteout of a directory
    assert (root / "usr" / "lib").is_dir()
    assert not list(root.rglob(".wh.*"))


@pytest.fixture
def layers() -> list[bytes]:
    return [make_tar(LAYER1), make_tar(LAYER2), make_tar(LAYER3)]


@pytest.mark.parametrize("gzip_layers, nested", [(True, False), (False, True)])
def test_oci_layout_layers_and_whiteouts(tmp_path, layers, gzip_layers, nested):
    img = make_oci_layout(tmp_path / "img", layers, gzip_layers=gzip_layers, nested_index=nested)
    root = tmp_path / "root"
    oci.extract(img, root, expected_digest=oci.image_digest(img))
    assert_flattened(root)


def test_docker_archive_layers_and_whiteouts(tmp_path, layers):
    img = make_docker_archive(tmp_path / "img.tar", layers)
    root = tmp_path / "root"
    oci.extract(img, root, expected_digest=oci.image_digest(img))
    assert_flattened(root)


def test_oci_layer_traversal_is_rejected(tmp_path):
    img = make_oci_layout(tmp_path / "img", [make_tar([("../../escape", "file", "x")])])
    with pytest.raises(UnsafeArchiveError):
        oci.extract(img, tmp_path / "root")
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("marker", [".wh.victim", ".wh..wh..opq"])
def test_oci_whiteouts_never_delete_through_symlinks(tmp_path, marker):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    img = make_oci_layout(tmp_path / "img", [
        make_tar([("etc", "symlink", str(outside))]),
        make_tar([(f"etc/{marker}", "file", "")]),
    ])
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        oci.extract(img, tmp_path / "root")
    assert (outside / "victim").read_text() == "precious"


def test_oci_errors(tmp_path, layers):
    img = make_oci_layout(tmp_path / "img", layers)
    with pytest.raises(BadImageError, match="digest mismatch"):
        oci.extract(img, tmp_path / "r1", expected_digest="sha256:" + "0" * 64)
    (tmp_path / "junk.tar").write_bytes(make_tar([("hello", "file", "x")]))
    with pytest.raises(BadImageError, match="neither a docker-archive nor an OCI archive"):
        oci.extract(tmp_path / "junk.tar", tmp_path / "r2")
    blob = next((img / "blobs" / "sha256").iterdir())
    blob.unlink()
    with pytest.raises(BadImageError, match="missing blob|missing"):
        oci.extract(img, tmp_path / "r3")


# ----------------------------------------------------------------------------- directory

def test_directory_fingerprint_follows_content(tmp_path):
    d = tmp_path / "d"
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "a").write_text("1")
    f1 = directory.fingerprint(d)
    assert directory.fingerprint(d) == f1
    (d / "etc" / "b").write_text("2")
    f2 = directory.fingerprint(d)
    assert f2 != f1
    os.chmod(d / "etc" / "b", 0o600)
    assert directory.fingerprint(d) != f2


# ----------------------------------------------------------------------------- the stages via the engine

def run_source_manifest(tmp_path: Path, stage: dict, artifact: str = "etc/os-release"
                        ) -> tuple[subprocess.CompletedProcess, Path]:
    m = {"version": "1", "name": "src", "source_epoch": 0,
         "pipelines": [{"name": "tree", "stages": [stage, {
             "type": "org.imagebuilder.source.tarball",  # a second stage: proves the tree is stored
             "options": {"path": str(_marker_tar(tmp_path))}}]}],
         "artifacts": [{"pipeline": "tree", "path": artifact, "name": "artifact"}]}
    mp = tmp_path / "m.json"
    mp.write_text(json.dumps(m))
    env = dict(os.environ)
    env.pop("IMAGEBUILDER_STAGES_DIR", None)
    r = subprocess.run([sys.executable, "-m", "imagebuilder", "run", str(mp), "--cache", str(tmp_path / "cache"),
                        "-o", str(tmp_path / "out"), "--json"], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=600)
    summary = json.loads(r.stdout) if r.returncode == 0 else {}
    last = summary.get("stages", [{}])[-1].get("id", "")
    return r, tmp_path / "cache" / "objects" / last / "tree"


def _marker_tar(tmp_path: Path) -> Path:
    p = tmp_path / "marker.tar"
    if not p.exists():
        p.write_bytes(make_tar([("marker", "file", "second stage")]))
    return p


def test_source_tarball_stage(tmp_path):
    tarpath = tmp_path / "rootfs.tar.gz"
    tarpath.write_bytes(gzip.compress(make_tar(ROOTFS)))
    r, tree = run_source_manifest(tmp_path, {"type": "org.imagebuilder.source.tarball",
                                             "options": {"path": str(tarpath),
                                                         "sha256": tarball.file_sha256(tarpath)}})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "artifact").read_text() == "ID=test\n"
    assert (tree / "marker").read_text() == "second stage"
    assert os.stat(tree / "usr/bin/su").st_mode & 0o7777 == 0o4755


def test_source_tarball_stage_rejects_traversal(tmp_path):
    tarpath = tmp_path / "evil.tar"
    tarpath.write_bytes(make_tar([("../evil", "file", "x")]))
    r, _ = run_source_manifest(tmp_path, {"type": "org.imagebuilder.source.tarball",
                                          "options": {"path": str(tarpath)}})
    assert r.returncode == 4
    assert "'..'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_source_oci_stage(tmp_path, layers):
    layers = [make_tar([("etc/", "dir", None), ("etc/os-release", "file", "ID=oci\n")]), *layers]
    img = make_docker_archive(tmp_path / "img.tar", layers)
    r, tree = run_source_manifest(tmp_path, {"type": "org.imagebuilder.source.oci",
                                             "options": {"path": str(img), "digest": oci.image_digest(img)}})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "artifact").read_text() == "ID=oci\n"
    assert_flattened(tree)


def test_source_directory_stage(tmp_path):
    src = tmp_path / "rootfs"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text("ID=dir\n")
    os.link(src / "etc" / "os-release", src / "etc" / "os-release.link")
    os.setxattr(src / "etc" / "os-release", "user.k", b"v")
    r, tree = run_source_manifest(tmp_path, {"type": "org.imagebuilder.source.directory",
                                             "options": {"path": str(src),
                                                         "fingerprint": directory.fingerprint(src)}})
    assert r.returncode == 0, r.stderr
    assert os.stat(tree / "etc/os-release").st_ino == os.stat(tree / "etc/os-release.link").st_ino
    assert os.getxattr(tree / "etc/os-release", "user.k") == b"v"
    # the directory changed after the manifest was made: the stage refuses
    (src / "etc" / "new").write_text("x")
    r2, _ = run_source_manifest(tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path,
                                {"type": "org.imagebuilder.source.directory",
                                 "options": {"path": str(src), "fingerprint": "0" * 64}})
    assert r2.returncode == 4 and "changed since the manifest" in r2.stderr


@pytest.mark.network
@pytest.mark.root
def test_source_mmdebstrap_stage(tmp_path):
    r, tree = run_source_manifest(tmp_path, {"type": "org.imagebuilder.source.mmdebstrap",
                                             "options": {"suite": "bookworm", "variant": "extract",
                                                         "packages": ["busybox"]}},
                                artifact="bin/busybox")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "artifact").read_bytes()[:4] == b"\x7fELF"
    assert (tree / "marker").read_text() == "second stage"
    assert "I: success" in (tmp_path / "out" / "build.log").read_text()
