"""OCI image sources: an oci-layout directory or a docker-archive tar (``docker save``).

The image's layers are applied in order with :mod:`.tarball`'s checks; whiteouts follow
the OCI image spec: ``DIR/.wh.NAME`` deletes NAME from the lower layers, and
``DIR/.wh..wh..opq`` hides everything the lower layers put in DIR.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import BadImageError, UserInputError
from ..run import run
from .tarball import (
    ExtractStats,
    assert_no_symlink_parents,
    check_member,
    extract_member,
    file_sha256,
    open_archive,
)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}


@dataclass(frozen=True)
class Layer:
    name: str  # blob path inside the image (for messages)
    media_type: str


def image_digest(path: Path) -> str:
    """A content digest of the image: sha256 of index.json (layout dir) or of the archive file."""
    path = Path(path)
    if path.is_dir():
        idx = path / "index.json"
        if not idx.is_file():
            raise UserInputError(f"{path}: not an oci-layout directory (no index.json)")
        return "sha256:" + hashlib.sha256(idx.read_bytes()).hexdigest()
    if path.is_file():
        return "sha256:" + file_sha256(path)
    raise UserInputError(f"{path}: not found")


def _pick_manifest(index: dict[str, Any], read_blob, where: str) -> dict[str, Any]:
    """Follow an OCI index (possibly nested) to one linux/amd64 image manifest."""
    for _ in range(4):
        manifests = index.get("manifests") or []
        if not manifests:
            raise BadImageError(f"{where}: index lists no manifests")
        if len(manifests) > 1:
            amd64 = [m for m in manifests
                     if (m.get("platform") or {}).get("architecture") in ("amd64", None)
                     and (m.get("platform") or {}).get("os", "linux") == "linux"]
            if len(amd64) != 1:
                raise BadImageError(f"{where}: {len(manifests)} images in the index; "
                                    "expected exactly one for linux/amd64")
            desc = amd64[0]
        else:
            desc = manifests[0]
        doc = json.loads(read_blob(desc["digest"]))
        if desc.get("mediaType") in INDEX_TYPES or doc.get("mediaType") in INDEX_TYPES \
                or ("manifests" in doc and "layers" not in doc):
            index = doc
            continue
        return doc
    raise BadImageError(f"{where}: nested image indexes too deep")


@contextlib.contextmanager
def _open_layer(fileobj: IO[bytes], media_type: str) -> Iterator[tarfile.TarFile]:
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        with tempfile.TemporaryFile() as tmp:
            run(["zstd", "-dc"], input=fileobj.read(), stdout=tmp, capture=False)
            tmp.seek(0)
            with open_archive(tmp) as tar:
                yield tar
        return
    with open_archive(fileobj) as tar:
        yield tar


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(tar: tarfile.TarFile, root: Path, stats: ExtractStats, is_root: bool) -> None:
    """Apply one layer onto root: whiteouts delete lower-layer content, the rest is extracted."""
    this_layer: set[str] = set()
    for member in tar:
        m = check_member(member)
        rel = m.name if m.name != "." else ""
        base = posixpath.basename(rel)
        parent = posixpath.dirname(rel)
        if base == OPAQUE:
            assert_no_symlink_parents(root, rel)  # never delete through a symlink
            d = root / parent if parent else root
            if d.is_dir() and not d.is_symlink():
                for child in list(d.iterdir()):
                    crel = f"{parent}/{child.name}" if parent else child.name
                    if crel not in this_layer:
                        _remove(child)
            continue
        if base.startswith(WHITEOUT):
            target = base[len(WHITEOUT):]
            if target in ("", ".", ".."):
                raise BadImageError(f"invalid whiteout {member.name!r}")
            victim = f"{parent}/{target}" if parent else target
            assert_no_symlink_parents(root, victim)  # never delete through a symlink
            _remove(root / victim)
            continue
        if extract_member(tar, m, root, stats, is_root) is not None:
            this_layer.add(rel)


def _layers_from_layout(path: Path) -> tuple[list[Layer], Any]:
    def read_blob(digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        p = path / "blobs" / algo / hexd
        if not p.is_file():
            raise BadImageError(f"{path}: missing blob {digest}")
        return p.read_bytes()

    index = json.loads((path / "index.json").read_text())
    manifest = _pick_manifest(index, read_blob, str(path))
    layers = [Layer(f"blobs/{'/'.join(l['digest'].split(':', 1))}", l.get("mediaType", ""))
              for l in manifest.get("layers", [])]
    return layers, manifest


def extract(path: Path, root: Path, *, expected_digest: str | None = None) -> ExtractStats:
    """Flatten the image at path (oci-layout dir or docker-archive tar) into root."""
    path, root = Path(path), Path(root)
    if expected_digest and image_digest(path) != expected_digest:
        raise BadImageError(f"{path}: image changed since the manifest was made (digest mismatch)",
                            hint="regenerate the manifest")
    root.mkdir(parents=True, exist_ok=True)
    stats = ExtractStats()
    is_root = os.geteuid() == 0
    if path.is_dir():
        if not (path / "oci-layout").is_file() and not (path / "index.json").is_file():
            raise BadImageError(f"{path}: not an oci-layout directory")
        layers, _ = _layers_from_layout(path)
        for layer in layers:
            with open(path / layer.name, "rb") as f, _open_layer(f, layer.media_type) as tar:
                apply_layer(tar, root, stats, is_root)
        return stats
    with open_archive(path) as outer:
        names = set(outer.getnames())

        def read(name: str) -> bytes:
            f = outer.extractfile(name) if name in names else None
            if f is None:
                raise BadImageError(f"{path}: missing {name}")
            return f.read()

        if "manifest.json" in names:  # docker-archive (also written by newer docker save)
            docker = json.loads(read("manifest.json"))
            if not isinstance(docker, list) or len(docker) != 1:
                raise BadImageError(f"{path}: expected one image in manifest.json, got "
                                    f"{len(docker) if isinstance(docker, list) else 'none'}")
            layers = [Layer(n, "") for n in docker[0].get("Layers", [])]
        elif "index.json" in names:  # an oci-layout packed into a tar
            index = json.loads(read("index.json"))
            manifest = _pick_manifest(
                index, lambda d: read(f"blobs/{'/'.join(d.split(':', 1))}"), str(path))
            layers = [Layer(f"blobs/{'/'.join(l['digest'].split(':', 1))}", l.get("mediaType", ""))
                      for l in manifest.get("layers", [])]
        else:
            raise BadImageError(f"{path}: neither a docker-archive nor an OCI archive "
                                "(no manifest.json or index.json)")
        for layer in layers:
            if layer.name not in names:
                raise BadImageError(f"{path}: missing layer {layer.name}")
            f = outer.extractfile(layer.name)
            assert f is not None
            with _open_layer(f, layer.media_type) as tar:
                apply_layer(tar, root, stats, is_root)
    return stats
