"""The registry transport: ``skopeo`` (containers/image, the client buildah and podman use).

skopeo copies between a local OCI layout and ``docker://HOST/REPO``: blobs first (those the
registry already has are skipped), the manifest last; when it reads it verifies every blob
and a manifest fetched by digest while streaming and stops at the first mismatch. It reads
credentials the standard way: ``--authfile FILE`` when given, else ``REGISTRY_AUTH_FILE``,
``${XDG_RUNTIME_DIR}/containers/auth.json``, then ``~/.docker/config.json`` (with credential
helpers); CA certificates from ``/etc/containers/certs.d/HOST:PORT/`` or the system store,
or a ``cert_dir``. Credentials never appear on a command line.

Every call is bounded (``--command-timeout`` and a hard timeout on the process), and a
failure becomes one typed :mod:`.errors` exception with a one-line message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolError, ToolMissingError
from ..run import run
from .errors import (
    RemoteAuthError,
    RemoteCacheError,
    RemoteIntegrityError,
    RemoteTLSError,
    RemoteUnavailable,
)

# stderr patterns -> error class (first match wins)
_CLASSES: list[tuple[re.Pattern[str], type[RemoteCacheError]]] = [
    (re.compile(r"digest did not match|digest mismatch|manifest digest .* does not match",
                re.I), RemoteIntegrityError),
    (re.compile(r"x509:|tls:|certificate|server gave HTTP response to HTTPS client", re.I),
     RemoteTLSError),
    (re.compile(r"unauthorized|authentication required|denied|forbidden|invalid username/password"
                r"|status code.* 40[13]\b", re.I), RemoteAuthError),
    (re.compile(r"connection refused|no such host|i/o timeout|deadline exceeded|timeout"
                r"|connection reset|network is unreachable|no route to host|EOF|"
                r"server misbehaving|503 Service Unavailable|502 Bad Gateway", re.I),
     RemoteUnavailable),
]
_NOT_FOUND = re.compile(r"manifest unknown|name unknown|not found|status code from registry 404",
                        re.I)

HINTS = {
    RemoteTLSError: "the registry's certificate must be trusted (/etc/containers/certs.d/HOST:PORT/"
                    "ca.crt or the system store); --cache-remote-insecure only for plain-HTTP "
                    "localhost",
    RemoteAuthError: "log in with `skopeo login`, `podman login` or `docker login`, or pass "
                     "--cache-remote-auth FILE (REGISTRY_AUTH_FILE is read too)",
    RemoteUnavailable: "the build goes on without the remote cache",
}


class NotFound(Exception):
    """The tag or repository does not exist (not an error for a cache lookup)."""


def _last_message(stderr: str) -> str:
    """skopeo's own message of its last (fatal) log line, without the logrus framing."""
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    if not lines:
        return ""
    last = lines[-1]
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', last)
    text = m.group(1).encode().decode("unicode_escape") if m else last
    return text.replace('\\"', '"').strip()


def classify(stderr: str) -> type[RemoteCacheError]:
    for pattern, cls in _CLASSES:
        if pattern.search(stderr):
            return cls
    return RemoteCacheError


def is_local_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    return name in ("localhost", "::1") or name.startswith("127.")


@dataclass(frozen=True)
class Skopeo:
    host: str  # HOST[:PORT]
    repo: str
    auth_file: Path | None = None
    cert_dir: Path | None = None
    insecure: bool = False  # plain HTTP or unverified TLS; localhost only (checked by the caller)
    tmpdir: Path | None = None
    timeout: float = 30.0  # per small request (manifests, tag lists)
    min_rate: float = 2 << 20  # bytes/s a transfer may not go below (bounds its timeout)

    @property
    def url(self) -> str:
        return f"oci://{self.host}/{self.repo}"

    def ref(self, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"docker://{self.host}/{self.repo}{sep}{tag_or_digest}"

    def _access(self, prefix: str = "") -> list[str]:
        args = []
        if self.auth_file is not None:
            args.append(f"--{prefix}authfile={self.auth_file}")
        if self.cert_dir is not None:
            args.append(f"--{prefix}cert-dir={self.cert_dir}")
        args.append(f"--{prefix}tls-verify={'false' if self.insecure else 'true'}")
        return args

    def _run(self, args: list[str], timeout: float, what: str):
        # --insecure-policy: containers' signature policy is for images; these entries are
        # verified by digest here and, with --cache-remote-trust, by our SSH signatures
        argv = ["skopeo", "--insecure-policy", f"--command-timeout={int(timeout)}s"]
        if self.tmpdir is not None:
            argv.append(f"--tmpdir={self.tmpdir}")
        try:
            return run([*argv, *args], timeout=timeout + 10)
        except ToolError as e:
            if isinstance(e, ToolMissingError):
                raise
            if e.returncode is None:  # our own timeout
                raise RemoteUnavailable(f"remote cache {self.url}: {what} timed out after "
                                        f"{int(timeout)} s", hint=HINTS[RemoteUnavailable]) from None
            msg = _last_message(e.stderr) or e.message
            if _NOT_FOUND.search(msg) and classify(msg) is not RemoteAuthError:
                raise NotFound(msg) from None
            cls = classify(e.stderr)
            raise cls(f"remote cache {self.url}: {what}: {msg}", argv=e.argv,
                      returncode=e.returncode, stderr=e.stderr, hint=HINTS.get(cls)) from None

    @staticmethod
    def _layout_ref(layout: Path, name: str) -> str:
        if ":" in str(layout):
            raise RemoteCacheError(f"{layout}: a path with ':' cannot be an OCI layout for skopeo",
                                   hint="use a --cache directory without ':' in its path")
        return f"oci:{layout}:{name}"

    def _transfer_timeout(self, nbytes: int) -> float:
        return self.timeout + nbytes / self.min_rate

    # ----------------------------------------------------------------- operations
    def manifest(self, tag_or_digest: str) -> bytes | None:
        """The raw manifest, or None if there is none by that name."""
        try:
            proc = self._run(["inspect", "--raw", "--retry-times=0", *self._access(),
                              self.ref(tag_or_digest)], self.timeout, f"reading {tag_or_digest}")
        except NotFound:
            return None
        return proc.stdout

    def tags(self) -> list[str]:
        try:
            proc = self._run(["list-tags", *self._access(), f"docker://{self.host}/{self.repo}"],
                             self.timeout, "listing tags")
        except NotFound:
            return []
        try:
            tags = json.loads(proc.stdout).get("Tags") or []
        except ValueError:
            raise RemoteCacheError(f"remote cache {self.url}: unreadable tag list") from None
        return sorted(t for t in tags if isinstance(t, str))

    def push(self, layout: Path, name: str, tag: str, nbytes: int) -> str:
        """Copy the manifest named name in layout (and its blobs) to tag; return its digest."""
        digestfile = Path(layout) / f".pushed-{tag}"
        self._run(["copy", "--quiet", "--preserve-digests", "--retry-times=0",
                   f"--digestfile={digestfile}", *self._access("dest-"),
                   self._layout_ref(layout, name), self.ref(tag)],
                  self._transfer_timeout(nbytes), f"pushing {tag[:24]}")
        return digestfile.read_text().strip()

    def pull(self, digest: str, layout: Path, name: str, nbytes: int) -> None:
        """Copy manifest digest (and its blobs, each verified) into layout, named name."""
        self._run(["copy", "--quiet", "--preserve-digests", "--retry-times=0",
                   *self._access("src-"), self.ref(digest), self._layout_ref(layout, name)],
                  self._transfer_timeout(nbytes), f"pulling {digest[:19]}")

