"""The remote cache against a real registry (Debian's docker-registry, TLS + htpasswd, started
here): push the stage results of a tiny build from store A, pull them into an empty store B,
trees identical down to owners, xattrs, hard links, mtimes and sparse maps; tampered blobs,
a registry killed mid-push, wrong credentials and TLS problems give typed one-line errors
and never a half entry; read mode pushes nothing; signed entries and trusted keys."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from registry_server import (  # noqa: F401  (fixtures)
    RegistryServer,
    clean_auth_env,
    fresh_registry,
    make_certificate,
    registry,
)

from imagebuilder.cache.errors import (
    RemoteAuthError,
    RemoteCacheError,
    RemoteIntegrityError,
    RemoteReadOnly,
    RemoteTLSError,
    RemoteUnavailable,
    RemoteUntrusted,
)
from imagebuilder.cache.oci_artifact import (
    ARTIFACT_TYPE,
    CHUNK_LAYER,
    signature_tag,
)
from imagebuilder.cache.remote import RemoteCache, RemoteSpec
from imagebuilder.errors import UserInputError
from imagebuilder.fsutil import data_extents
from imagebuilder.pipeline.store import Store

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "fixtures/images/tiny.yaml"

pytestmark = pytest.mark.root  # owners and device nodes round-trip as root


# ------------------------------------------------------------------------------ helpers
def snapshot(root: Path) -> dict[str, tuple]:
    """Everything cp -a keeps, per path: type, mode, owner, mtime (ns), xattrs, link target,
    content hash, data extents (the sparse map), and hard-link group (links within the tree:
    ostree's local pulls also link across store objects, which no copy keeps)."""
    out: dict[str, tuple] = {}
    first_of_inode: dict[tuple[int, int], str] = {}
    links: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames) + ([""] if dirpath == str(root) else []):
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            group = first_of_inode.setdefault((st.st_dev, st.st_ino), rel)
            links[group] = links.get(group, 0) + 1
            xattrs = {}
            for k in sorted(os.listxattr(p, follow_symlinks=False)):
                xattrs[k] = os.getxattr(p, k, follow_symlinks=False)
            content = extents = link = None
            if stat.S_ISREG(st.st_mode):  # holes read as zeros: hash the data extents only
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    extents = tuple((o, o + n) for o, n in data_extents(f.fileno(), 0, st.st_size))
                    for start, end in extents:
                        f.seek(start)
                        while start < end:
                            chunk = f.read(min(end - start, 1 << 20))
                            h.update(chunk)
                            start += len(chunk)
                content = h.hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(p)
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns, size, tuple(xattrs.items()), link, content, extents,
                        group, st.st_rdev if not stat.S_ISDIR(st.st_mode) else 0)
    return {k: v[:10] + ((v[10] if links[v[10]] > 1 else None),) + v[11:] for k, v in out.items()}


def assert_same_tree(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys(), (sorted(sa.keys() - sb.keys())[:10], sorted(sb.keys() - sa.keys())[:10])
    diff = [(k, sa[k], sb[k]) for k in sa if sa[k] != sb[k]]
    assert not diff, diff[:5]


def spec(server: RegistryServer, repo: str, **kw) -> RemoteSpec:
    kw.setdefault("auth_file", server.auth_file())
    kw.setdefault("cert_dir", server.cert_dir)
    return RemoteSpec(server.url(repo), **kw)


def make_object(store: Store, oid: str, build) -> None:
    """Commit a tree made by build(tree) as object oid."""
    with store.tempdir("mk") as tmp:
        tree = tmp / "tree"
        tree.mkdir()
        build(tree)
        store.commit(oid, tree, move=True, meta={"type": "org.imagebuilder.test", "pipeline": "t",
                                                  "index": 0, "seconds": 0.1})


def oid_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def small_tree(tree: Path) -> None:
    (tree / "etc").mkdir()
    (tree / "etc/hostname").write_text("node\n")
    (tree / "bin").mkdir()
    (tree / "bin/tool").write_bytes(os.urandom(300_000))
    os.link(tree / "bin/tool", tree / "bin/tool2")
    os.symlink("tool", tree / "bin/ln")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Store:
    """Store A: the cache of a real build of fixtures/images/tiny.yaml."""
    base = tmp_path_factory.mktemp("machine-a")
    proc = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(TINY), "-q",
                           "--cache", str(base / "cache"), "-o", str(base / "out")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store(base / "cache")
    assert len(store.object_ids()) >= 5
    return store


# ------------------------------------------------------------------------------ round trip
@pytest.mark.slow
def test_tiny_build_round_trips_through_the_registry(registry, tiny_store, tmp_path):
    remote = RemoteCache(spec(registry, "ci/tiny"))
    ids = tiny_store.object_ids()
    pushed = [remote.push(tiny_store, oid) for oid in ids]
    assert [p.status for p in pushed] == ["pushed"] * len(ids)
    assert sorted(remote.list()) == sorted(ids)
    # the disk image object: a 1 GiB sparse image travels as chunks of its data only
    disk = [oid for oid in ids if remote.lookup(oid).stage_type == "org.imagebuilder.disk.image"]
    [disk_id] = disk
    entry = remote.lookup(disk_id)
    assert entry.manifest["artifactType"] == ARTIFACT_TYPE
    assert any(l["mediaType"] == CHUNK_LAYER for l in entry.manifest["layers"])
    assert entry.size < 200 << 20  # of a 1 GiB image

    # a second push of the same ids uploads nothing
    assert {remote.push(tiny_store, oid).status for oid in ids} == {"present"}

    store_b = Store(tmp_path / "machine-b")
    for oid in ids:
        t = remote.pull(store_b, oid)
        assert t.status == "pulled" and t.details["stored"]
    assert store_b.object_ids() == ids
    for oid in ids:
        assert_same_tree(tiny_store.object_tree(oid), store_b.object_tree(oid))
        import json

        meta = json.loads((store_b.object_dir(oid) / "object.json").read_text())
        assert meta["remote"] == remote.url and meta["type"].startswith("org.imagebuilder.")
    assert list((store_b.root / "tmp").iterdir()) == []


def test_attributes_survive(registry, tmp_path):
    """Owners, setuid, capabilities and user xattrs, ACLs, FIFOs, devices, odd names, empty
    dirs, symlinks (also hard-linked ones), sparse files big and small."""
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")

    def build(tree: Path) -> None:
        small_tree(tree)
        (tree / "usr/bin").mkdir(parents=True)
        su = tree / "usr/bin/su"
        su.write_bytes(b"#!/bin/sh\n")
        os.chown(su, 0, 0)
        os.chmod(su, 0o4755)
        ping = tree / "usr/bin/ping"
        ping.write_bytes(b"ping")
        subprocess.run(["setcap", "cap_net_raw+ep", str(ping)], check=True)
        os.setxattr(ping, "user.origin", b"test\x00\xff")
        subprocess.run(["setfacl", "-m", "u:1234:r", str(ping)], check=True)
        (tree / "home/user").mkdir(parents=True)
        os.chown(tree / "home/user", 1000, 1000)
        (tree / "home/user/.profile").write_text("x")
        os.chown(tree / "home/user/.profile", 1000, 1001)
        os.chmod(tree / "home", 0o751)
        os.mkfifo(tree / "fifo")
        (tree / "dev").mkdir()
        os.mknod(tree / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (tree / "empty").mkdir()
        odd = tree / "we ird\nname-é\udcff"
        odd.write_text("odd")
        os.symlink("/etc/hostname", tree / "abs-link")
        os.link(tree / "bin/ln", tree / "bin/ln-hard", follow_symlinks=False)  # ostree checkouts
        with open(tree / "small.sparse", "wb") as f:  # below the chunking threshold
            f.truncate(10 << 20)
            f.seek(5 << 20)
            f.write(b"data")
        with open(tree / "disk.img", "wb") as f:  # chunked: data at both ends, 4 GiB apparent
            f.truncate(4 << 30)
            f.write(os.urandom(100_000))
            f.seek(70 << 20)
            f.write(b"\x00" * 8192 + b"mid")
            f.seek((4 << 30) - 4096)
            f.write(b"end" * 100)
        os.chown(tree / "disk.img", 107, 108)
        os.chmod(tree / "disk.img", 0o640)
        os.setxattr(tree / "disk.img", "user.kind", b"raw")
        os.utime(tree / "disk.img", ns=(1, 1_234_567_891))
        os.utime(tree / "bin/ln", ns=(5, 1_700_000_000_123_456_789), follow_symlinks=False)

    oid = oid_of("attributes")
    make_object(a, oid, build)
    remote = RemoteCache(spec(registry, "ci/attrs"))
    pushed = remote.push(a, oid)
    assert pushed.bytes < 10 << 20  # 4 GiB apparent, ~100 KiB of data
    assert remote.pull(b, oid).status == "pulled"
    assert_same_tree(a.object_tree(oid), b.object_tree(oid))


# ------------------------------------------------------------------------------ integrity
def test_tampered_blob_is_refused_and_never_stored(registry, tmp_path):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    oid = oid_of("tamper")
    make_object(a, oid, small_tree)
    remote = RemoteCache(spec(registry, "ci/tamper"))
    remote.push(a, oid)
    layer = remote.lookup(oid).manifest["layers"][0]
    blob = registry.blob_path(layer["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(RemoteIntegrityError, match=r"(?i)digest did not match.*") as e:
        remote.pull(b, oid)
    assert "\n" not in e.value.message and remote.url in e.value.message
    assert not b.contains(oid)
    assert list((b.root / "objects").iterdir()) == [] and list((b.root / "tmp").iterdir()) == []


def test_an_entry_under_another_stage_tag_is_refused(registry, tmp_path):
    """Re-tagging a valid entry under another stage id (cache poisoning) is detected."""
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    good, other = oid_of("good"), oid_of("other")
    make_object(a, good, small_tree)
    remote = RemoteCache(spec(registry, "ci/retag"))
    remote.push(a, good)
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests",
                    f"--authfile={registry.auth_file()}", f"--src-cert-dir={registry.cert_dir}",
                    f"--dest-cert-dir={registry.cert_dir}",
                    f"docker://{registry.host}/ci/retag:{good}",
                    f"docker://{registry.host}/ci/retag:{other}"], check=True, capture_output=True)
    with pytest.raises(RemoteIntegrityError, match="not for stage"):
        remote.pull(b, other)
    assert not b.contains(other)


def test_killed_registry_mid_push_leaves_no_entry(fresh_registry, tmp_path):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    oid = oid_of("killed")

    def build(tree: Path) -> None:
        with open(tree / "disk.img", "wb") as f:  # three chunks
            for _ in range(3):
                f.write(os.urandom(64 << 20))

    make_object(a, oid, build)
    remote = RemoteCache(spec(fresh_registry, "ci/kill"))
    result: dict = {}

    def push():
        try:
            result["ok"] = remote.push(a, oid)
        except RemoteCacheError as e:
            result["error"] = e

    t = threading.Thread(target=push)
    t.start()
    deadline = time.monotonic() + 120
    while not fresh_registry.uploads_in_progress("ci/kill") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fresh_registry.uploads_in_progress("ci/kill"), "no upload seen"
    fresh_registry.kill()
    t.join(timeout=120)
    assert "error" in result, result
    assert isinstance(result["error"], RemoteUnavailable), result["error"]
    fresh_registry.start()
    assert remote.lookup(oid) is None and remote.list() == []
    assert remote.pull(b, oid) is None and not b.contains(oid)
    # the next push completes the entry
    assert remote.push(a, oid).status == "pushed"
    assert remote.pull(b, oid).status == "pulled"
    assert_same_tree(a.object_tree(oid), b.object_tree(oid))


# ------------------------------------------------------------------------------ access errors
def test_wrong_credentials(registry, tmp_path, clean_auth_env):
    wrong = registry.auth_file(tmp_path / "wrong.json", password="not-the-password")
    remote = RemoteCache(spec(registry, "ci/auth", auth_file=wrong))
    with pytest.raises(RemoteAuthError, match="unauthorized") as e:
        remote.lookup(oid_of("x"))
    assert "\n" not in e.value.message and "not-the-password" not in str(e.value.__dict__)
    assert e.value.exit_code == 4 and "login" in e.value.hint
    # no credentials at all
    with pytest.raises(RemoteAuthError):
        RemoteCache(RemoteSpec(registry.url("ci/auth"), cert_dir=registry.cert_dir)).lookup(oid_of("x"))


def test_standard_auth_sources(registry, tmp_path, clean_auth_env, monkeypatch):
    """REGISTRY_AUTH_FILE and ~/.docker/config.json are read like skopeo/podman/docker do."""
    oid = oid_of("auth-sources")
    s = RemoteSpec(registry.url("ci/auth-sources"), cert_dir=registry.cert_dir)
    registry.auth_file(clean_auth_env / ".docker/config.json")
    assert RemoteCache(s).lookup(oid) is None  # authenticated: a plain miss
    (clean_auth_env / ".docker/config.json").unlink()
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(registry.auth_file(tmp_path / "env-auth.json")))
    assert RemoteCache(s).lookup(oid) is None


def test_tls_errors(registry, tmp_path):
    remote = RemoteCache(RemoteSpec(registry.url("ci/tls"), auth_file=registry.auth_file()))
    with pytest.raises(RemoteTLSError, match="x509") as e:
        remote.lookup(oid_of("x"))
    assert "certs.d" in e.value.hint
    # a certificate for another name
    other = tmp_path / "other"
    other.mkdir()
    make_certificate(other / "ca.crt", tmp_path / "other.key", names=("registry.example",))
    with pytest.raises(RemoteTLSError):
        RemoteCache(spec(registry, "ci/tls", cert_dir=other)).lookup(oid_of("x"))


def test_plain_http_needs_insecure_and_localhost(tmp_path, clean_auth_env):
    server = RegistryServer(tmp_path / "plain", tls=False, auth=False).start()
    try:
        oid = oid_of("plain")
        with pytest.raises(RemoteTLSError, match="HTTP response to HTTPS client"):
            RemoteCache(RemoteSpec(server.url("ci/plain"))).lookup(oid)
        a = Store(tmp_path / "a")
        make_object(a, oid, small_tree)
        remote = RemoteCache(RemoteSpec(server.url("ci/plain"), insecure=True))
        assert remote.push(a, oid).status == "pushed"
        assert remote.pull(Store(tmp_path / "b"), oid).status == "pulled"
    finally:
        server.stop()
    with pytest.raises(UserInputError, match="not localhost"):
        RemoteSpec("oci://registry.example/ci/x", insecure=True)


def test_registry_down_or_silent_is_unavailable_quickly(tmp_path):
    port_down = socket.socket()
    port_down.bind(("127.0.0.1", 0))
    down = port_down.getsockname()[1]
    port_down.close()
    t0 = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="connection refused"):
        RemoteCache(RemoteSpec(f"oci://127.0.0.1:{down}/ci/x", timeout=5)).lookup(oid_of("x"))
    assert time.monotonic() - t0 < 5
    # a server that accepts and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        t0 = time.monotonic()
        with pytest.raises(RemoteUnavailable) as e:
            RemoteCache(RemoteSpec(f"oci://127.0.0.1:{silent.getsockname()[1]}/ci/x",
                                   timeout=2)).lookup(oid_of("x"))
        assert time.monotonic() - t0 < 15
        assert "\n" not in e.value.message
    finally:
        silent.close()


# ------------------------------------------------------------------------------ modes, trust
def test_read_mode_never_pushes(registry, tmp_path):
    a = Store(tmp_path / "a")
    oid = oid_of("read-mode")
    make_object(a, oid, small_tree)
    ro = RemoteCache(spec(registry, "ci/read", mode="read"))
    with pytest.raises(RemoteReadOnly):
        ro.push(a, oid)
    assert ro.list() == []
    RemoteCache(spec(registry, "ci/read")).push(a, oid)
    assert ro.pull(Store(tmp_path / "b"), oid).status == "pulled"  # reading is what it is for


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("trusted", "other"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(d / name)], check=True)
    return d


def test_signed_entries_and_trusted_keys(registry, tmp_path, keys):
    a = Store(tmp_path / "a")
    signed, unsigned = oid_of("signed"), oid_of("unsigned")
    make_object(a, signed, small_tree)
    make_object(a, unsigned, small_tree)
    remote = RemoteCache(spec(registry, "ci/signed", sign_key=keys / "trusted"))
    assert remote.push(a, signed).signed
    RemoteCache(spec(registry, "ci/signed")).push(a, unsigned)
    digest = remote.lookup(signed).digest
    assert signature_tag(digest) in RemoteCache(spec(registry, "ci/signed")).transport.tags()

    trusting = RemoteCache(spec(registry, "ci/signed", trust=(keys / "trusted.pub",)))
    got = trusting.pull(Store(tmp_path / "b"), signed)
    assert got.signed and "Good" in got.details["signed_by"]
    with pytest.raises(RemoteUntrusted, match="not signed"):
        trusting.pull(Store(tmp_path / "c"), unsigned)
    distrusting = RemoteCache(spec(registry, "ci/signed", trust=(keys / "other.pub",)))
    with pytest.raises(RemoteUntrusted, match="trusted key"):
        distrusting.pull(Store(tmp_path / "d"), signed)
    assert not Store(tmp_path / "d").contains(signed)
    # a signing runner replaces an unsigned entry by its own, signed one
    assert remote.push(a, unsigned).status == "pushed"
    assert remote.push(a, unsigned).status == "present"
    assert trusting.pull(Store(tmp_path / "e"), unsigned).signed


def test_racing_pushes_and_pulls_of_one_id_are_harmless(registry, tmp_path):
    a1, a2, b = Store(tmp_path / "a1"), Store(tmp_path / "a2"), Store(tmp_path / "b")
    oid = oid_of("race")
    make_object(a1, oid, small_tree)
    make_object(a2, oid, small_tree)  # "another runner": same id, its own bytes
    remote = RemoteCache(spec(registry, "ci/race"))
    results: list = []

    def run(fn):
        try:
            results.append(fn())
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            results.append(e)

    threads = [threading.Thread(target=run, args=(lambda s=s: remote.push(s, oid, force=True),))
               for s in (a1, a2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["pushed", "pushed"], results
    assert remote.list() == [oid]
    results.clear()
    threads = [threading.Thread(target=run, args=(lambda: remote.pull(b, oid),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.details["stored"] for r in results) == [False, True], results
    # the last manifest won; the pulled tree is one runner's, whole
    assert snapshot(b.object_tree(oid)) in (snapshot(a1.object_tree(oid)), snapshot(a2.object_tree(oid)))
    assert b.object_ids() == [oid] and list((b.root / "tmp").iterdir()) == []
