"""A remote build cache in an OCI registry: look up, pull and push store objects by stage id.

::

    remote = RemoteCache(RemoteSpec.parse("oci://registry.example:5000/ci/imagebuilder"))
    if not store.contains(oid):
        remote.pull(store, oid)          # None on a miss; the object is in the store after
    ...
    remote.push(store, oid)              # "pushed", or "present" if someone was faster

An entry is the OCI artifact of :mod:`.oci_artifact`, tagged with the stage id (ids are
content hashes, so a tag never needs to change: racing pushes of one id are harmless, the
last manifest wins and both are complete). Pushes upload the blobs first and the manifest
last, so an interrupted push leaves no visible entry; pulls verify every blob by digest
while streaming, unpack into a temp directory of the store and rename it into place, so an
interrupted or refused pull leaves nothing in ``objects/``.

With trusted keys (``--cache-remote-trust KEY.pub``) an entry is used only if it carries an
SSH signature by one of them over its stage id and manifest digest; with a signing key
pushes are signed. In ``read`` mode (untrusted pull-request builds) nothing is pushed.

Every failure is a :class:`~.errors.RemoteCacheError` with a one-line message; a build
turns it into a warning and goes on locally.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ToolError, UserInputError
from ..pipeline.store import Store
from . import signing
from .errors import RemoteCacheError, RemoteIntegrityError, RemoteReadOnly, RemoteUntrusted
from .oci_artifact import (
    ANN_ID,
    ANN_SIGNATURE,
    ANN_STAGE_TYPE,
    ANN_SUBJECT,
    EMPTY_JSON,
    EMPTY_TYPE,
    MANIFEST_TYPE,
    SIGNATURE_TYPE,
    STAGE_ID,
    Layout,
    canonical,
    parse_signature_manifest,
    parse_stage_manifest,
    sha256_digest,
    signature_tag,
    signed_payload,
)
from .pack import OBJECT_KEYS, check_space, pack, unpack, unpacked_bytes
from .skopeo import NotFound, Skopeo, is_local_host

SCHEME = "oci://"
MODES = ("read", "readwrite")
_HOST = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")
_REPO = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")


def parse_url(url: str, what: str = "--cache-remote") -> tuple[str, str]:
    """oci://HOST[:PORT]/REPO -> (HOST[:PORT], REPO)."""
    if not url.startswith(SCHEME):
        raise UserInputError(f"{what} {url!r}: expected oci://HOST[:PORT]/REPOSITORY")
    host, _, repo = url[len(SCHEME):].partition("/")
    repo = repo.rstrip("/")
    if not _HOST.match(host):
        raise UserInputError(f"{what} {url!r}: bad registry host {host!r}")
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    if port is not None and not 0 < int(port) < 65536:
        raise UserInputError(f"{what} {url!r}: bad port {port}")
    if not repo or len(repo) > 255 or not _REPO.match(repo):
        raise UserInputError(f"{what} {url!r}: bad repository {repo!r} "
                             "(lowercase letters, digits, '.', '_', '-', separated by '/')")
    return host, repo


@dataclass(frozen=True)
class RemoteSpec:
    """Where the remote cache is and how to use it (the ``--cache-remote*`` settings)."""

    url: str
    mode: str = "readwrite"
    auth_file: Path | None = None  # else REGISTRY_AUTH_FILE, containers' auth.json, ~/.docker
    insecure: bool = False  # plain HTTP (or unverified TLS): localhost only
    cert_dir: Path | None = None  # CA certificates (*.crt) besides certs.d and the system store
    trust: tuple[Path, ...] = ()  # pull only entries signed by one of these public keys
    sign_key: Path | None = None  # sign what is pushed with this private key
    timeout: float = 30.0  # per small request; transfers get more, by size

    def __post_init__(self) -> None:
        host, _ = parse_url(self.url)
        if self.mode not in MODES:
            raise UserInputError(f"--cache-remote-mode {self.mode!r}: expected read or readwrite")
        if self.insecure and not is_local_host(host):
            raise UserInputError(f"--cache-remote-insecure: {host} is not localhost",
                                 hint="TLS verification stays on for every other registry; "
                                 "trust its CA in /etc/containers/certs.d/HOST:PORT/ca.crt")
        for p, what in ((self.auth_file, "--cache-remote-auth"), (self.cert_dir, "CA directory")):
            if p is not None and not Path(p).exists():
                raise UserInputError(f"{what} {p}: not found")
        for key in self.trust:
            signing.load_public_key(key)  # a bad key file is a usage error now, not a miss later
        if self.sign_key is not None and not Path(self.sign_key).is_file():
            raise UserInputError(f"signing key {self.sign_key}: not found")


@dataclass
class Entry:
    """A stage result found in the registry (not yet pulled)."""

    oid: str
    digest: str  # of the manifest
    manifest: dict[str, Any]
    signed_by: str | None = None  # ssh-keygen's verdict when trusted keys were given

    @property
    def size(self) -> int:
        """Bytes to download: the config and the (distinct) layers."""
        blobs = {d["digest"]: d["size"] for d in [self.manifest["config"], *self.manifest["layers"]]}
        return sum(blobs.values())

    @property
    def stage_type(self) -> str:
        return str(self.manifest.get("annotations", {}).get(ANN_STAGE_TYPE, ""))


@dataclass
class Transfer:
    oid: str
    status: str  # "pulled" | "pushed" | "present"
    digest: str
    bytes: int = 0  # compressed bytes moved
    tree_bytes: int = 0  # bytes unpacked / packed
    seconds: float = 0.0
    signed: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class RemoteCache:
    def __init__(self, spec: RemoteSpec, *, tmpdir: Path | None = None):
        self.spec = spec
        host, repo = parse_url(spec.url)
        self.transport = Skopeo(host, repo, auth_file=spec.auth_file, cert_dir=spec.cert_dir,
                                insecure=spec.insecure, tmpdir=tmpdir, timeout=spec.timeout)

    @property
    def url(self) -> str:
        return self.spec.url

    @staticmethod
    def _check_id(oid: str) -> None:
        if not STAGE_ID.match(oid):
            raise UserInputError(f"{oid!r} is not a stage id (64 hex digits)")

    # ------------------------------------------------------------------ queries
    def list(self) -> list[str]:
        """Stage ids tagged in the repository."""
        return [t for t in self.transport.tags() if STAGE_ID.match(t)]

    def lookup(self, oid: str) -> Entry | None:
        """The entry for stage oid, or None if the registry has none (or, with trusted
        keys, none signed by them: :class:`RemoteUntrusted` says why)."""
        self._check_id(oid)
        data = self.transport.manifest(oid)
        if data is None:
            return None
        where = f"remote cache {self.url}: stage {oid[:12]}"
        entry = Entry(oid, sha256_digest(data), parse_stage_manifest(data, oid, where))
        if self.spec.trust:
            entry.signed_by = self._verify_signature(entry, where)
        return entry

    def _verify_signature(self, entry: Entry, where: str) -> str:
        data = self.transport.manifest(signature_tag(entry.digest))
        if data is None:
            raise RemoteUntrusted(f"{where}: entry is not signed; not used (--cache-remote-trust)")
        sig = parse_signature_manifest(data, entry.oid, entry.digest, where)
        try:
            return signing.verify(signed_payload(entry.oid, entry.digest), sig, self.spec.trust)
        except signing.BadSignature as e:
            raise RemoteUntrusted(f"{where}: {e.message}; not used") from None

    # ------------------------------------------------------------------ pull
    def pull(self, store: Store, oid: str) -> Transfer | None:
        """Fetch stage oid into store; None if the registry has no entry for it."""
        t0 = time.monotonic()
        entry = self.lookup(oid)
        if entry is None:
            return None
        where = f"remote cache {self.url}: stage {oid[:12]}"
        check_space(store.root / "tmp", entry.size, where)
        with store.tempdir(f"pull-{oid[:16]}") as tmp:
            try:
                self.transport.pull(entry.digest, tmp / "layout", oid, entry.size)
            except NotFound:
                return None  # deleted since the lookup
            config, digest = unpack(Layout(tmp / "layout"), oid, tmp / "tree",
                                    expect_digest=entry.digest, where=where)
            meta = {k: v for k, v in config["object"].items()
                    if k in OBJECT_KEYS and isinstance(v, (str, int, float)) and not isinstance(v, bool)}
            meta.update({"remote": self.url, "remote_digest": digest})
            stored = store.commit(oid, tmp / "tree", move=True, meta=meta)
        return Transfer(oid, "pulled", digest, bytes=entry.size, tree_bytes=unpacked_bytes(config),
                        seconds=time.monotonic() - t0, signed=entry.signed_by is not None,
                        details={"stored": stored, "signed_by": entry.signed_by})

    # ------------------------------------------------------------------ push
    def push(self, store: Store, oid: str, *, force: bool = False) -> Transfer:
        """Upload stage oid from store (unless the registry has a valid entry already)."""
        if self.spec.mode != "readwrite":
            raise RemoteReadOnly(f"remote cache {self.url} is used read-only (--cache-remote-mode read)")
        self._check_id(oid)
        t0 = time.monotonic()
        if not store.contains(oid):
            raise UserInputError(f"stage {oid[:12]} is not in the cache {store.root}")
        if not force:
            present = self._present(oid)
            # an entry someone pushed unsigned is replaced by ours when we sign
            if present is not None and (self.spec.sign_key is None or self.transport.manifest(
                    signature_tag(present)) is not None):
                return Transfer(oid, "present", present, seconds=time.monotonic() - t0)
        where = f"remote cache {self.url}: stage {oid[:12]}"
        with store.lock(oid, shared=True), store.tempdir(f"push-{oid[:16]}") as tmp:
            if not store.contains(oid):  # pruned meanwhile
                raise UserInputError(f"stage {oid[:12]} is not in the cache {store.root}")
            try:
                packed = pack(store.object_dir(oid), oid, Layout(tmp / "layout"), tmp)
            except (ToolError, OSError) as e:
                if isinstance(e, RemoteCacheError):
                    raise
                raise RemoteCacheError(f"{where}: cannot pack it: {e}") from None
            digest = self.transport.push(tmp / "layout", oid, oid, packed.blob_bytes)
        if digest != packed.digest:
            raise RemoteIntegrityError(f"{where}: the registry stored manifest {digest}, "
                                       f"not the {packed.digest} pushed")
        signed = False
        if self.spec.sign_key is not None:
            self._push_signature(store, oid, digest)
            signed = True
        return Transfer(oid, "pushed", digest, bytes=packed.blob_bytes, tree_bytes=packed.tree_bytes,
                        seconds=time.monotonic() - t0, signed=signed)

    def _present(self, oid: str) -> str | None:
        data = self.transport.manifest(oid)
        if data is None:
            return None
        try:
            parse_stage_manifest(data, oid, "existing entry")
        except RemoteIntegrityError:
            return None  # not ours or damaged: replace it
        return sha256_digest(data)

    def _push_signature(self, store: Store, oid: str, digest: str) -> None:
        sig = signing.sign(signed_payload(oid, digest), self.spec.sign_key)
        with store.tempdir(f"sign-{oid[:16]}") as tmp:
            layout = Layout(tmp / "layout")
            empty = layout.add_bytes(EMPTY_JSON, EMPTY_TYPE)
            manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                        "artifactType": SIGNATURE_TYPE, "config": empty, "layers": [empty],
                        "annotations": {ANN_ID: oid, ANN_SUBJECT: digest, ANN_SIGNATURE: sig}}
            tag = signature_tag(digest)
            layout.set_ref(tag, layout.add_bytes(canonical(manifest), MANIFEST_TYPE))
            self.transport.push(tmp / "layout", tag, tag, len(sig))
