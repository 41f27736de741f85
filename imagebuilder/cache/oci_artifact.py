"""The OCI artifact a stored stage becomes, and the local OCI layout it is staged in.

One store object is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``)
with ``artifactType`` :data:`ARTIFACT_TYPE`, tagged with the stage id:

- ``config`` (:data:`CONFIG_TYPE`): JSON with the stage id, the object's ``object.json``,
  the tree's records, and the table :mod:`.pack` needs to rebuild the tree (per layer its
  kind and unpacked size; per large file its path, size, owner, mode, mtime, xattrs and the
  data extents each chunk holds);
- ``layers``: first the tree as zstd-compressed POSIX tar layers (:data:`TREE_LAYER`), then
  one :data:`CHUNK_LAYER` per window of a large file that holds data (zstd of the data
  extents only, so holes cost nothing);
- ``annotations``: the stage id and type, for people browsing the registry.

A signature (optional) is a second, tiny artifact (:data:`SIGNATURE_TYPE`) tagged
``sha256-<manifest hex>.sig`` whose annotations carry an SSH signature (see :mod:`.signing`)
over :func:`signed_payload`, which binds the stage id to the manifest digest.

Everything read back is untrusted: :func:`parse_stage_manifest` and the config checks in
:mod:`.pack` validate types, digests and sizes, and :class:`DigestReader` verifies a blob
against its descriptor while it is streamed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from .errors import RemoteIntegrityError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.imagebuilder.stage.v1"
CONFIG_TYPE = "application/vnd.imagebuilder.stage.config.v1+json"
TREE_LAYER = "application/vnd.imagebuilder.stage.tree.v1.tar+zstd"
CHUNK_LAYER = "application/vnd.imagebuilder.stage.chunk.v1+zstd"
SIGNATURE_TYPE = "application/vnd.imagebuilder.stage.signature.v1"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"

ANN_ID = "org.imagebuilder.stage.id"
ANN_STAGE_TYPE = "org.imagebuilder.stage.type"
ANN_LAYER = "org.imagebuilder.layer"
ANN_PATH = "org.imagebuilder.path"
ANN_OFFSET = "org.imagebuilder.offset"
ANN_SIGNATURE = "org.imagebuilder.signature"
ANN_SUBJECT = "org.imagebuilder.subject"

MAX_MANIFEST = 4 << 20  # what the distribution registry accepts
MAX_CONFIG = 64 << 20
MAX_BLOB = 1 << 40
MAX_LAYERS = 100_000

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
STAGE_ID = re.compile(r"^[0-9a-f]{64}$")


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_tag(manifest_digest: str) -> str:
    """The tag of the signature of a manifest (the scheme cosign uses for its ``.sig`` tags)."""
    return manifest_digest.replace(":", "-") + ".sig"


def signed_payload(stage_id: str, manifest_digest: str) -> bytes:
    """What a signature covers: the stage id and the manifest digest (so no entry can be
    replayed under another stage's tag)."""
    return f"imagebuilder-stage-v1\nid {stage_id}\nmanifest {manifest_digest}\n".encode()


# ---------------------------------------------------------------- validation of untrusted JSON
def _bad(where: str, what: str) -> RemoteIntegrityError:
    return RemoteIntegrityError(f"{where}: {what}", hint="the registry entry is damaged or "
                                "not an imagebuilder cache entry; it is ignored")


def check_descriptor(desc: Any, where: str, *, media_types: tuple[str, ...] | None = None,
                     max_size: int = MAX_BLOB) -> dict[str, Any]:
    if not isinstance(desc, dict):
        raise _bad(where, "descriptor is not an object")
    digest, size, mt = desc.get("digest"), desc.get("size"), desc.get("mediaType")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise _bad(where, f"bad digest {str(digest)[:80]!r} (sha256 expected)")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_size:
        raise _bad(where, f"bad size {size!r}")
    if not isinstance(mt, str) or (media_types is not None and mt not in media_types):
        raise _bad(where, f"unexpected media type {mt!r}")
    return desc


def load_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(where, f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _bad(where, "not a JSON object")
    return doc


def parse_stage_manifest(data: bytes, stage_id: str, where: str) -> dict[str, Any]:
    """Validate a stage manifest for stage_id; return it parsed."""
    if len(data) > MAX_MANIFEST:
        raise _bad(where, f"manifest of {len(data)} bytes is too large")
    m = load_json(data, where)
    if m.get("schemaVersion") != 2 or m.get("mediaType") != MANIFEST_TYPE:
        raise _bad(where, "not an OCI image manifest")
    if m.get("artifactType") != ARTIFACT_TYPE:
        raise _bad(where, f"artifactType {m.get('artifactType')!r} is not {ARTIFACT_TYPE}")
    ann = m.get("annotations")
    if not isinstance(ann, dict) or ann.get(ANN_ID) != stage_id:
        raise _bad(where, f"manifest is not for stage {stage_id[:12]}")
    check_descriptor(m.get("config"), f"{where} config", media_types=(CONFIG_TYPE,),
                     max_size=MAX_CONFIG)
    layers = m.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise _bad(where, "bad layer list")
    for i, layer in enumerate(layers):
        check_descriptor(layer, f"{where} layer {i}", media_types=(TREE_LAYER, CHUNK_LAYER))
    return m


def parse_signature_manifest(data: bytes, stage_id: str, manifest_digest: str,
                             where: str) -> str:
    """The armored SSH signature of a signature artifact (validated against its subject)."""
    if len(data) > MAX_MANIFEST:
        raise _bad(where, "signature manifest too large")
    m = load_json(data, where)
    ann = m.get("annotations")
    if m.get("artifactType") != SIGNATURE_TYPE or not isinstance(ann, dict):
        raise _bad(where, "not an imagebuilder signature")
    if ann.get(ANN_ID) != stage_id or ann.get(ANN_SUBJECT) != manifest_digest:
        raise _bad(where, "signature is for another entry")
    sig = ann.get(ANN_SIGNATURE)
    if not isinstance(sig, str) or "BEGIN SSH SIGNATURE" not in sig:
        raise _bad(where, "no SSH signature in the signature artifact")
    return sig


# ---------------------------------------------------------------- verified streaming
class DigestReader(io.RawIOBase):
    """Read a blob, hashing as it goes; reading past its size or a digest mismatch at the
    end raises :class:`RemoteIntegrityError`. Call :meth:`finish` once the consumer is done
    (it reads what the consumer left and checks size and digest)."""

    def __init__(self, f: BinaryIO, desc: dict[str, Any] | None, where: str):
        """With desc None, only hash (see :attr:`digest` and :attr:`count`)."""
        self._f = f
        self._want = desc["digest"] if desc else None
        self._size = desc["size"] if desc else MAX_BLOB
        self._where = where
        self._h = hashlib.sha256()
        self._n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if not n:
            return 0
        self._n += n
        if self._n > self._size:
            raise RemoteIntegrityError(
                f"{self._where}: blob {self._want} is larger than its declared {self._size} bytes")
        self._h.update(memoryview(b)[:n])
        return n

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()

    @property
    def count(self) -> int:
        return self._n

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        got = self.digest
        if self._want is not None and (self._n != self._size or got != self._want):
            raise RemoteIntegrityError(
                f"{self._where}: blob {self._want} failed verification (got {got}, "
                f"{self._n} of {self._size} bytes); refused",
                hint="the registry's copy is corrupt or was tampered with")


class LimitReader(io.RawIOBase):
    """Pass a stream through, refusing to produce more than limit bytes (decompression bound)."""

    def __init__(self, f, limit: int, where: str):
        self._f = f
        self._left = limit
        self._limit = limit
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = len(b)
        data = self._f.read(min(want, self._left + 1))
        if len(data) > self._left:
            raise RemoteIntegrityError(
                f"{self._where}: unpacks to more than its declared {self._limit} bytes; refused")
        self._left -= len(data)
        b[: len(data)] = data
        return len(data)


# ---------------------------------------------------------------- the local OCI layout
class Layout:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            marker.write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob_path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise _bad(str(self.root), f"bad digest {digest!r}")
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def add_bytes(self, data: bytes, media_type: str, annotations: dict[str, str] | None = None
                  ) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": media_type, "digest": sha256_digest(data),
                                "size": len(data)}
        path = self.blob_path(desc["digest"])
        if not path.exists():
            tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        if annotations:
            desc["annotations"] = annotations
        return desc

    @contextmanager
    def temp(self) -> Iterator[Path]:
        """A temp path in the layout to write a blob into; finish with :meth:`adopt`."""
        tmp = self.root / "blobs" / f".{uuid.uuid4().hex}.tmp"
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def adopt(self, tmp: Path, digest: str, size: int, media_type: str,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Move a written temp file in as the blob with this digest."""
        os.replace(tmp, self.blob_path(digest))
        desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
        if annotations:
            desc["annotations"] = annotations
        return desc

    def set_ref(self, name: str, manifest: dict[str, Any]) -> None:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{"mediaType": MANIFEST_TYPE, "digest": manifest["digest"],
                                "size": manifest["size"],
                                "annotations": {"org.opencontainers.image.ref.name": name}}]}
        (self.root / "index.json").write_bytes(canonical(index))

    def manifest_descriptor(self, name: str) -> dict[str, Any]:
        """The descriptor the layout's index.json records for ref name."""
        where = f"{self.root}/index.json"
        try:
            index = load_json((self.root / "index.json").read_bytes(), where)
        except FileNotFoundError:
            raise _bad(where, "missing") from None
        for d in index.get("manifests") or []:
            if isinstance(d, dict) and (d.get("annotations") or {}).get(
                    "org.opencontainers.image.ref.name") == name:
                return check_descriptor(d, where, media_types=(MANIFEST_TYPE,),
                                        max_size=MAX_MANIFEST)
        raise _bad(where, f"no manifest named {name!r}")

    @contextmanager
    def open_blob(self, desc: dict[str, Any], where: str) -> Iterator[DigestReader]:
        try:
            f = open(self.blob_path(desc["digest"]), "rb")
        except FileNotFoundError:
            raise _bad(where, f"blob {desc['digest']} is missing") from None
        with f:
            yield DigestReader(f, desc, where)

    def read_blob(self, desc: dict[str, Any], where: str) -> bytes:
        with self.open_blob(desc, where) as r:
            data = b"".join(iter(lambda: r.read(1 << 20), b""))
            r.finish()
        return data
