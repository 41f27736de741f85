"""A store object <-> the blobs of its OCI artifact (see :mod:`.oci_artifact`).

Packing keeps what ``cp -a`` keeps in the local store: owners (numeric), modes, mtimes
(nanoseconds), xattrs (file capabilities, ACLs, SELinux labels), hard links, device nodes,
FIFOs, and holes. Sockets are skipped (they mean nothing in a stored tree).

- Everything but the large files goes into one POSIX tar (GNU ``tar --sparse --xattrs``,
  entries in byte order of their names, zstd-compressed).
- A large file (a regular file of :data:`LARGE_FILE` bytes or more, not hard-linked: disk
  images) is cut into windows of :data:`CHUNK` bytes; each window that holds data becomes
  one layer with the zstd-compressed bytes of its data extents only. A 4 GiB sparse image
  with 300 MiB of data uploads about the compressed 300 MiB, and an image that changed in
  one partition shares the blobs of the unchanged windows with the previous push.

Unpacking treats every blob as untrusted: each one is hashed while it is streamed and
refused on a digest or size mismatch, decompression is bounded by the unpacked sizes the
(digest-verified) config declares, tar members go through the root-filesystem filter of
:mod:`imagebuilder.sources.tarball` (no ``..``, no escaping links, nothing written through
a symlink), and large files are created only at confined paths that do not exist yet.
The caller unpacks into a temp directory beside ``objects/`` and renames it into place.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import zstandard

from ..errors import BadImageError
from ..fsutil import data_extents
from ..run import run
from ..sources.tarball import (
    ExtractStats,
    assert_no_symlink_parents,
    check_member,
    extract_member,
    normalize_name,
)
from .errors import RemoteCacheError, RemoteIntegrityError
from .oci_artifact import (
    ANN_ID,
    ANN_LAYER,
    ANN_OFFSET,
    ANN_PATH,
    ANN_STAGE_TYPE,
    ARTIFACT_TYPE,
    CHUNK_LAYER,
    CONFIG_TYPE,
    MANIFEST_TYPE,
    MAX_BLOB,
    TREE_LAYER,
    DigestReader,
    Layout,
    LimitReader,
    canonical,
    load_json,
    parse_stage_manifest,
)

FORMAT = 1
LARGE_FILE = 64 << 20
CHUNK = 64 << 20
ZSTD_LEVEL = 1  # ~4x faster than 3 for ~4 % more bytes: pushes are CPU-bound before they are network-bound
READ_SIZE = 1 << 20
# an object.json key a stage can set to keep its result off the registry (secrets)
PRIVATE_KEY = "private"
OBJECT_KEYS = ("type", "pipeline", "index", "seconds")


@dataclass
class Packed:
    manifest: dict[str, Any]
    digest: str  # of the manifest
    size: int  # of the manifest
    config: dict[str, Any]
    blob_bytes: int  # config + layers, compressed
    tree_bytes: int  # what unpacking writes (tar stream + data extents)


def walk(tree: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry of tree as (relative path, lstat), the root as '', each directory before
    its contents, names in byte order."""
    root = os.fspath(tree)
    yield "", os.lstat(root)
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            names = sorted((e.name for e in it), key=os.fsencode)
        subdirs = []
        for name in names:
            r = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(root, r))
            yield r, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(r)
        stack.extend(reversed(subdirs))


def _is_large(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size >= LARGE_FILE


def _xattrs(path: str) -> dict[str, str]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        try:
            out[name] = base64.b64encode(os.getxattr(path, name, follow_symlinks=False)).decode()
        except OSError:
            continue
    return out


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length:
        buf = os.pread(fd, min(length, 1 << 30), offset)
        if not buf:
            raise RemoteCacheError(f"file shrank while packing (at offset {offset})")
        parts.append(buf)
        length -= len(buf)
        offset += len(buf)
    return b"".join(parts)


def _windows(fd: int, size: int) -> dict[int, list[tuple[int, int]]]:
    """The data extents of a file, cut at CHUNK boundaries, by window number."""
    windows: dict[int, list[tuple[int, int]]] = {}
    for start, length in data_extents(fd, 0, size):
        end = start + length
        while start < end:
            w = start // CHUNK
            stop = min(end, (w + 1) * CHUNK)
            windows.setdefault(w, []).append((start, stop))
            start = stop
    return windows


def _records(tree: Path) -> dict[str, Any]:
    from ..pipeline.engine import _collect_records  # lazy: the engine imports this package

    return _collect_records(tree)


def _pack_tree(tree: Path, names: list[str], layout: Layout, scratch: Path
               ) -> tuple[dict[str, Any], int]:
    listfile = scratch / "tree.list"
    listfile.write_bytes(b"\0".join(os.fsencode(n) for n in names) + b"\0")
    with layout.temp() as tmp:
        run(["tar", "--create", "--file", tmp, "--directory", tree, "--format=posix",
             "--sparse", "--xattrs", "--xattrs-include=*", "--numeric-owner",
             "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
             "--no-recursion", "--null", "--verbatim-files-from", "--files-from", listfile,
             f"--use-compress-program=zstd -{ZSTD_LEVEL} -T0 -q"])
        # one pass over the blob: its digest, and the tar size the puller bounds itself by
        with open(tmp, "rb") as f:
            hashing = DigestReader(f, None, str(tmp))
            with zstandard.ZstdDecompressor().stream_reader(
                    hashing, read_across_frames=True, closefd=False) as z:
                unpacked = 0
                while chunk := z.read(READ_SIZE):
                    unpacked += len(chunk)
            hashing.finish()
        desc = layout.adopt(tmp, hashing.digest, hashing.count, TREE_LAYER,
                            annotations={ANN_LAYER: "tree"})
    return desc, unpacked


def pack(object_dir: Path, oid: str, layout: Layout, scratch: Path) -> Packed:
    """Write the blobs and manifest of store object oid into layout (ref name = oid)."""
    tree = Path(object_dir) / "tree"
    obj = load_json((Path(object_dir) / "object.json").read_bytes(), f"{object_dir}/object.json")
    if obj.get(PRIVATE_KEY):
        raise RemoteCacheError(f"stage {oid[:12]} is private (it may hold secrets); not pushed")
    names: list[str] = []
    large: list[tuple[str, os.stat_result]] = []
    for rel, st in walk(tree):
        if stat.S_ISSOCK(st.st_mode):
            continue
        if _is_large(st):
            large.append((rel, st))
        else:
            names.append(rel or ".")
    tree_desc, tar_size = _pack_tree(tree, names, layout, scratch)
    layers = [tree_desc]
    entries: list[dict[str, Any]] = [{"kind": "tree", "size": tar_size}]
    files = []
    # multi-threaded zstd gives the same bytes for any number of threads (>= 1): dedup holds
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    data_bytes = 0
    for index, (rel, st) in enumerate(large):
        path = os.path.join(tree, rel)
        with open(path, "rb") as f:
            fd = f.fileno()
            for w, extents in sorted(_windows(fd, st.st_size).items()):
                data = b"".join(_pread_all(fd, e - s, s) for s, e in extents)
                data_bytes += len(data)
                layers.append(layout.add_bytes(cctx.compress(data), CHUNK_LAYER, annotations={
                    ANN_LAYER: "chunk", ANN_PATH: rel, ANN_OFFSET: str(w * CHUNK)}))
                entries.append({"kind": "chunk", "file": index,
                                "extents": [[s, e - s] for s, e in extents]})
            after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise RemoteCacheError(f"{path} changed while packing")
        files.append({"path": rel, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
                      "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
                      "xattrs": _xattrs(path)})
    config = {"format": FORMAT, "id": oid,
              "object": {k: obj[k] for k in OBJECT_KEYS if k in obj},
              "records": _records(tree), "chunk_size": CHUNK, "layers": entries, "files": files}
    config_desc = layout.add_bytes(canonical(config), CONFIG_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                "config": config_desc, "layers": layers,
                "annotations": {ANN_ID: oid, ANN_STAGE_TYPE: str(obj.get("type", ""))}}
    mdesc = layout.add_bytes(canonical(manifest), MANIFEST_TYPE)
    layout.set_ref(oid, mdesc)
    unique = {d["digest"]: d["size"] for d in [config_desc, *layers]}
    return Packed(manifest=manifest, digest=mdesc["digest"], size=mdesc["size"], config=config,
                  blob_bytes=sum(unique.values()), tree_bytes=tar_size + data_bytes)


# ------------------------------------------------------------------------------- unpack
def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_config(config: dict[str, Any], manifest: dict[str, Any], oid: str, where: str
                 ) -> dict[str, Any]:
    """Validate a (digest-verified, still untrusted) config against its manifest."""
    def bad(what: str) -> RemoteIntegrityError:
        return RemoteIntegrityError(f"{where}: config {what}", hint="the entry is ignored")

    if config.get("format") != FORMAT:
        raise bad(f"format {config.get('format')!r} is not supported (this version reads {FORMAT})")
    if config.get("id") != oid:
        raise bad(f"is for another stage ({str(config.get('id'))[:16]!r})")
    if not isinstance(config.get("object"), dict):
        raise bad("has no object description")
    files, entries = config.get("files"), config.get("layers")
    if not isinstance(files, list) or not isinstance(entries, list):
        raise bad("lacks its file or layer table")
    if len(entries) != len(manifest["layers"]):
        raise bad(f"lists {len(entries)} layers, the manifest {len(manifest['layers'])}")
    paths = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise bad(f"file {i} is malformed")
        try:
            rel = normalize_name(f["path"])
        except BadImageError as e:
            raise bad(f"file {i}: {e.message}") from None
        if not rel or rel in paths:
            raise bad(f"file {i} has an empty or repeated path {f['path']!r}")
        paths.add(rel)
        if not (_int(f.get("size"), 0, MAX_BLOB) and _int(f.get("mode"), 0, 0o7777)
                and _int(f.get("uid"), 0, 2**32 - 1) and _int(f.get("gid"), 0, 2**32 - 1)
                and _int(f.get("mtime_ns"), -(2**63), 2**63 - 1)
                and isinstance(f.get("xattrs"), dict)):
            raise bad(f"file {f['path']!r} has bad attributes")
        for k, v in f["xattrs"].items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise bad(f"file {f['path']!r} has a bad xattr")
    ends: dict[int, int] = {}
    for i, (e, desc) in enumerate(zip(entries, manifest["layers"])):
        kind = e.get("kind") if isinstance(e, dict) else None
        if kind == "tree" and desc["mediaType"] == TREE_LAYER and _int(e.get("size"), 0, MAX_BLOB):
            continue
        if kind != "chunk" or desc["mediaType"] != CHUNK_LAYER \
                or not _int(e.get("file"), 0, len(files) - 1) or not isinstance(e.get("extents"), list):
            raise bad(f"layer {i} does not match the manifest")
        size = files[e["file"]]["size"]
        for x in e["extents"]:
            if not (isinstance(x, list) and len(x) == 2 and _int(x[0], 0, MAX_BLOB)
                    and _int(x[1], 1, MAX_BLOB) and x[0] + x[1] <= size
                    and x[0] >= ends.get(e["file"], 0)):
                raise bad(f"layer {i} has a bad extent {x!r}")
            ends[e["file"]] = x[0] + x[1]
    return config


def unpacked_bytes(config: dict[str, Any]) -> int:
    return sum(e["size"] if e["kind"] == "tree" else sum(n for _, n in e["extents"])
               for e in config["layers"])


def _mtime_ns(m: tarfile.TarInfo) -> int:
    raw = (m.pax_headers or {}).get("mtime")
    if raw:
        try:
            return int(Decimal(raw) * 1_000_000_000)
        except InvalidOperation:
            pass
    return int(m.mtime) * 1_000_000_000


def _zstd_reader(raw: DigestReader):
    return zstandard.ZstdDecompressor().stream_reader(raw, read_size=READ_SIZE,
                                                      read_across_frames=True, closefd=False)


def _extract_tree(layout: Layout, desc: dict[str, Any], size: int, dest: Path,
                  dirs: list[tarfile.TarInfo], stats: ExtractStats, where: str) -> None:
    is_root = os.geteuid() == 0
    with layout.open_blob(desc, where) as raw:
        try:
            with _zstd_reader(raw) as z, tarfile.open(
                    fileobj=LimitReader(z, size, where), mode="r|", bufsize=READ_SIZE) as tar:
                tar.copybufsize = READ_SIZE
                for member in tar:
                    m = check_member(member)
                    rel = extract_member(tar, m, dest, stats, is_root, link_symlinks=True)
                    if m.isdir():
                        dirs.append(m)  # mode and mtime are set once the tree is complete
                    elif rel is not None and not m.islnk():
                        ns = _mtime_ns(m)
                        os.utime(dest / rel, ns=(ns, ns), follow_symlinks=False)
        except BadImageError as e:
            raise RemoteIntegrityError(f"{where}: {e.message}; refused",
                                       hint="the entry is ignored") from None
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
            raise RemoteIntegrityError(f"{where}: layer {desc['digest']} is not a valid "
                                       f"tar+zstd stream ({e}); refused") from None
        raw.finish()


def _write_large(layout: Layout, dest: Path, f: dict[str, Any],
                 chunks: list[tuple[dict[str, Any], dict[str, Any]]], where: str) -> None:
    rel = normalize_name(f["path"])
    try:
        assert_no_symlink_parents(dest, rel)
    except BadImageError as e:
        raise RemoteIntegrityError(f"{where}: {e.message}; refused") from None
    parent = (dest / rel).parent
    if parent.is_symlink() or not parent.is_dir():
        raise RemoteIntegrityError(f"{where}: large file {rel!r} has no directory in the tree")
    try:
        fd = os.open(dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise RemoteIntegrityError(f"{where}: large file {rel!r} is also in the tree layer") from None
    try:
        for desc, entry in chunks:
            with layout.open_blob(desc, where) as raw:
                try:
                    with _zstd_reader(raw) as z:
                        for off, length in entry["extents"]:
                            while length:
                                buf = z.read(min(length, READ_SIZE))
                                if not buf:
                                    raise RemoteIntegrityError(
                                        f"{where}: chunk {desc['digest']} of {rel} is short")
                                os.pwrite(fd, buf, off)
                                off += len(buf)
                                length -= len(buf)
                        if z.read(1):
                            raise RemoteIntegrityError(
                                f"{where}: chunk {desc['digest']} of {rel} is longer than its extents")
                except zstandard.ZstdError as e:
                    raise RemoteIntegrityError(
                        f"{where}: chunk {desc['digest']} is not valid zstd ({e}); refused") from None
                raw.finish()
        os.ftruncate(fd, f["size"])
        if os.geteuid() == 0:
            os.fchown(fd, f["uid"], f["gid"])
        os.fchmod(fd, f["mode"])
        for name, value in f["xattrs"].items():
            try:
                os.setxattr(fd, name, base64.b64decode(value, validate=True))
            except (OSError, ValueError):
                pass  # as for tar members: e.g. security.* without privileges
        os.utime(fd, ns=(f["mtime_ns"], f["mtime_ns"]))
    finally:
        os.close(fd)


def check_space(where_dir: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(where_dir).free
    if free < need + (64 << 20):
        raise RemoteCacheError(f"{what}: needs {need >> 20} MiB, only {free >> 20} MiB free "
                               f"in {where_dir}", hint="free disk space or use another --cache")


def unpack(layout: Layout, oid: str, dest: Path, *, expect_digest: str | None = None,
           where: str = "") -> tuple[dict[str, Any], str]:
    """Rebuild the tree of stage oid from layout into dest (must not exist).

    Returns the config and the manifest digest. Raises :class:`RemoteIntegrityError` for
    anything that does not verify; dest is then left for the caller to remove.
    """
    where = where or f"stage {oid[:12]}"
    mdesc = layout.manifest_descriptor(oid)
    if expect_digest and mdesc["digest"] != expect_digest:
        raise RemoteIntegrityError(f"{where}: got manifest {mdesc['digest']}, expected {expect_digest}")
    manifest = parse_stage_manifest(layout.read_blob(mdesc, where), oid, where)
    config = check_config(load_json(layout.read_blob(manifest["config"], where), where),
                          manifest, oid, where)
    check_space(dest.parent, unpacked_bytes(config), where)
    dest.mkdir()
    dirs: list[tarfile.TarInfo] = []
    stats = ExtractStats()
    chunks: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for desc, entry in zip(manifest["layers"], config["layers"]):
        if entry["kind"] == "tree":
            _extract_tree(layout, desc, entry["size"], dest, dirs, stats, where)
        else:
            chunks.setdefault(entry["file"], []).append((desc, entry))
    for index, f in enumerate(config["files"]):
        _write_large(layout, dest, f, chunks.get(index, []), where)
    # directory modes and mtimes last: filling them changed their mtimes
    for d in reversed(dirs):
        p = dest / d.name if d.name != "." else dest
        if p.is_dir() and not p.is_symlink():
            ns = _mtime_ns(d)
            os.chmod(p, d.mode)
            os.utime(p, ns=(ns, ns))
    return config, mdesc["digest"]
