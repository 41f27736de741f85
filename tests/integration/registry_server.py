"""A real OCI registry for tests: Debian's ``docker-registry`` (the CNCF distribution registry).

:class:`RegistryServer` runs it on 127.0.0.1 on a free port, with htpasswd (bcrypt) auth and
a self-signed TLS certificate made here with ``cryptography`` (or plain HTTP), storage in a
temp directory. It starts in well under 2 s; :meth:`~RegistryServer.kill` sends SIGKILL and
:meth:`~RegistryServer.start` brings it back on the same port and storage.

Fixtures (import them into a test module): ``registry`` (one TLS+auth registry per test
session; give each test its own repository with :meth:`~RegistryServer.url`) and
``fresh_registry`` (a private one, for tests that kill or break it).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "docker-registry"
START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(cert: Path, key: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
    """A self-signed CA-style certificate valid for names (IP addresses or DNS names)."""
    pkey = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    crt = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
           .public_key(pkey.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName(alt), critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(pkey, hashes.SHA256()))
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pkey.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    key.chmod(0o600)


class RegistryServer:
    def __init__(self, root: Path, *, tls: bool = True, auth: bool = True,
                 user: str = "ci", password: str | None = None):
        self.root = Path(root)
        self.tls = tls
        self.auth = auth
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.storage = self.root / "storage"
        self.cert_dir = self.root / "certs"  # ca.crt, for skopeo's --cert-dir
        self.storage.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        if tls:
            make_certificate(self.cert_dir / "ca.crt", self.root / "server.key")
        if auth:
            subprocess.run(["htpasswd", "-B", "-C", "4", "-i", "-c", str(self.root / "htpasswd"), user],
                           input=self.password.encode(), check=True, capture_output=True)
        self._write_config()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"oci://{self.host}/{repo}"

    def auth_file(self, path: Path | None = None, *, password: str | None = None,
                  host: str | None = None) -> Path:
        """Write a docker/containers auth.json for this registry (wrong password if asked)."""
        path = path or self.root / "auth.json"
        token = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {host or self.host: {"auth": token}}}))
        path.chmod(0o600)
        return path

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def uploads_in_progress(self, repo: str) -> list[Path]:
        d = self.storage / "docker/registry/v2/repositories" / repo / "_uploads"
        return list(d.iterdir()) if d.is_dir() else []

    def _write_config(self) -> None:
        lines = [
            "version: 0.1",
            "log:", "  level: error", "  accesslog:", "    disabled: true",
            "storage:", "  filesystem:", f"    rootdirectory: {self.storage}",
            "  maintenance:", "    uploadpurging:", "      enabled: false",
            "http:", f"  addr: 127.0.0.1:{self.port}", f"  secret: {secrets.token_hex(16)}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.cert_dir / 'ca.crt'}",
                      f"    key: {self.root / 'server.key'}"]
        if self.auth:
            lines += ["auth:", "  htpasswd:", "    realm: imagebuilder-test",
                      f"    path: {self.root / 'htpasswd'}"]
        (self.root / "config.yml").write_text("\n".join(lines) + "\n")

    def _ping(self) -> bool:
        scheme = "https" if self.tls else "http"
        ctx = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt")) if self.tls else None
        try:
            urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=1, context=ctx)
            return True
        except urllib.error.HTTPError as e:
            return e.code == 401  # up, and asking for credentials
        except (OSError, ssl.SSLError):
            return False

    def start(self) -> "RegistryServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.root / "config.yml")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}: "
                                   + (self.root / "registry.log").read_text()[-2000:])
            if self._ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("docker-registry did not answer within "
                           f"{START_TIMEOUT} s: " + (self.root / "registry.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crashed or yanked registry."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def have_registry() -> bool:
    return all(shutil.which(t) for t in (REGISTRY_BIN, "htpasswd", "skopeo"))


def _server(root: Path, **kw) -> RegistryServer:
    if not have_registry():
        pytest.fail("docker-registry, htpasswd (apache2-utils) and skopeo are needed: make setup")
    return RegistryServer(root, **kw).start()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """One TLS + htpasswd registry for the session (use a repository per test)."""
    server = _server(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture
def fresh_registry(tmp_path):
    """A private TLS + htpasswd registry for tests that kill or break it."""
    server = _server(tmp_path / "registry")
    yield server
    server.stop()


@pytest.fixture
def clean_auth_env(tmp_path, monkeypatch):
    """No credentials from the machine: an empty HOME, no REGISTRY_AUTH_FILE."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return home


__all__ = ["RegistryServer", "registry", "fresh_registry", "clean_auth_env", "make_certificate"]
