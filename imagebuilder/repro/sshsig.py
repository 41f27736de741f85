"""SSH signatures (OpenSSH's SSHSIG format, ``ssh-keygen -Y sign``/``-Y verify``) in Python.

A signature made here is accepted by ``ssh-keygen -Y verify -n NAMESPACE -I ID -f ALLOWED -s
FILE.sig < FILE`` and one made by ``ssh-keygen -Y sign`` is accepted by :func:`verify_bytes`;
Ed25519 signatures are deterministic, so both produce the same bytes for the same key and data.

Format (OpenSSH PROTOCOL.sshsig): the signer signs the blob ::

    "SSHSIG" || string(namespace) || string(reserved="") || string(hash_alg) || string(H(data))

and writes, base64-armoured between ``-----BEGIN/END SSH SIGNATURE-----`` lines, ::

    "SSHSIG" || uint32(1) || string(public key) || string(namespace) || string(reserved)
             || string(hash_alg) || string(signature)

where ``string`` is a uint32 big-endian length + bytes, the public key is the SSH wire
encoding (``string("ssh-ed25519") || string(32 bytes)``) and the signature is
``string("ssh-ed25519") || string(64 bytes)``.

Keys: OpenSSH private keys (``-----BEGIN OPENSSH PRIVATE KEY-----``, what ``ssh-keygen -t
ed25519`` writes) or PKCS#8 PEM, Ed25519 only. Trusted public keys: ``.pub`` lines
(``ssh-ed25519 AAAA… comment``) or ``allowed_signers`` lines (``PRINCIPALS [OPTIONS] ssh-ed25519
AAAA…``; a ``namespaces="…"`` option restricts the key to those namespaces).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidConfigError, UserInputError

MAGIC = b"SSHSIG"
VERSION = 1
NAMESPACE = "imagebuilder"
HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
ED25519 = b"ssh-ed25519"
WRAP = 70  # ssh-keygen's line length inside the armour


class SignatureError(InvalidConfigError):
    """A signature is malformed, does not verify, or was made by an untrusted key."""

    kind = "bad signature"


# --------------------------------------------------------------------------- wire encoding


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SignatureError(f"{self.what}: truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.uint32())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key as SSH knows it, with the principals/options of its trust line."""

    raw: bytes  # the 32-byte Ed25519 key
    comment: str = ""
    principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None  # None: any namespace

    @property
    def blob(self) -> bytes:
        return _string(ED25519) + _string(self.raw)

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def openssh(self) -> str:
        line = f"{ED25519.decode()} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line


def _key_from_blob(blob: bytes, what: str) -> bytes:
    r = _Reader(blob, what)
    kt = r.string()
    if kt != ED25519:
        raise SignatureError(f"{what}: unsupported key type {kt.decode(errors='replace')!r} "
                             "(only ssh-ed25519)")
    raw = r.string()
    r.done()
    if len(raw) != 32:
        raise SignatureError(f"{what}: bad Ed25519 key length {len(raw)}")
    return raw


class PassphraseNeeded(UserInputError):
    """The private key is encrypted and no passphrase was given."""


def _is_encrypted_openssh(data: bytes) -> bool:
    """True if an OpenSSH private key file names a cipher other than ``none``."""
    m = re.search(rb"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----",
                  data, re.S)
    if not m:
        return False
    try:
        raw = base64.b64decode(b"".join(m.group(1).split()))
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic):
        return False
    try:
        return _Reader(raw[len(magic):], "key").string() != b"none"
    except SignatureError:
        return False


def load_private_key(path: str | Path, passphrase: bytes | None = None):
    """The Ed25519 private key in ``path`` (OpenSSH or PKCS#8 PEM).

    A passphrase-protected key needs ``passphrase``; without one it is refused with a clear
    error (the CLI prompts for it on a terminal)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..fsutil import read_input

    p = Path(path)
    data = read_input(p, "SSH private key")
    encrypted = _is_encrypted_openssh(data)
    if encrypted and passphrase is None:
        raise PassphraseNeeded(
            f"{p}: the key is passphrase-protected",
            hint="run on a terminal to be prompted, pass --passphrase-file FILE, or sign with "
                 "an unencrypted copy (ssh-keygen -p -N '' -f COPY)")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=passphrase if encrypted else None)
        elif b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=passphrase)
        else:
            raise UserInputError(f"{p}: not an SSH private key",
                                 hint="expected the private half (e.g. ~/.ssh/id_ed25519, not .pub)")
    except UnsupportedAlgorithm as e:
        raise UserInputError(f"{p}: cannot read the key: {e}") from None
    except ValueError as e:
        msg = str(e)
        if encrypted and ("password" in msg.lower() or "decrypt" in msg.lower()
                          or "corrupt" in msg.lower()):
            raise UserInputError(f"{p}: wrong passphrase") from None
        raise UserInputError(f"{p}: not a valid private key: {msg}") from None
    except TypeError as e:  # PEM: encrypted without password, or password for a plain key
        raise UserInputError(f"{p}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserInputError(f"{p}: {type(key).__name__.replace('PrivateKey', '')} key; "
                             "only Ed25519 keys can sign",
                             hint="create one with: ssh-keygen -t ed25519 -f KEY")
    return key


def public_key_of(private_key) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    return PublicKey(raw)


_OPT = r'(?:[A-Za-z-]+(?:="[^"]*")?)'


def parse_allowed(text: str, origin: str = "allowed keys") -> list[PublicKey]:
    """Trusted keys from ``.pub`` / ``authorized_keys``-style lines or ``allowed_signers`` lines.

    Lines of other key types are skipped; ``cert-authority`` lines are refused (certificates
    are not supported); a file with no Ed25519 key at all is an error."""
    keys: list[PublicKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.search(r"(?:^|\s)(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)\s+"
                      r"([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$", line)
        if not m:
            raise UserInputError(f"{origin}:{n}: not a public key line")
        head = line[:m.start(1)].strip()
        if m.group(1) != ED25519.decode():
            continue
        principals: tuple[str, ...] = ()
        namespaces: tuple[str, ...] | None = None
        if head:
            fields = re.findall(rf'"[^"]*"|{_OPT}|\S+', head)
            principals = tuple(fields[0].strip('"').split(","))
            for opt in fields[1:]:
                name, _, val = opt.partition("=")
                if name.lower() == "cert-authority":
                    raise UserInputError(f"{origin}:{n}: cert-authority keys are not supported")
                if name.lower() == "namespaces":
                    namespaces = tuple(x.strip() for x in val.strip('"').split(","))
        try:
            blob = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            raise UserInputError(f"{origin}:{n}: bad base64 in the key") from None
        try:
            rawkey = _key_from_blob(blob, f"{origin}:{n}")
        except SignatureError as e:
            raise UserInputError(e.message) from None
        keys.append(PublicKey(rawkey, (m.group(3) or "").strip(), principals, namespaces))
    if not keys:
        raise UserInputError(f"{origin}: no ssh-ed25519 public key in it")
    return keys


def load_allowed(path: str | Path) -> list[PublicKey]:
    from ..fsutil import read_input

    p = Path(path)
    text = read_input(p, "public key file").decode(errors="replace")
    if "PRIVATE KEY" in text:
        raise UserInputError(f"{p}: this is a private key; give the public one (KEY.pub)")
    return parse_allowed(text, str(p))


# --------------------------------------------------------------------------- sign / verify


def _signed_blob(namespace: str, hash_alg: str, data: bytes) -> bytes:
    digest = HASHES[hash_alg](data).digest()
    return (MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_alg.encode())
            + _string(digest))


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i:i + WRAP] for i in range(0, len(b64), WRAP)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def dearmor(text: str | bytes, what: str = "signature") -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    m = re.search(re.escape(ARMOR_BEGIN) + r"(.*?)" + re.escape(ARMOR_END), text, re.S)
    if not m:
        raise SignatureError(f"{what}: not an SSH signature (no {ARMOR_BEGIN} block)")
    try:
        return base64.b64decode("".join(m.group(1).split()), validate=True)
    except ValueError:
        raise SignatureError(f"{what}: bad base64 in the signature") from None


def sign_bytes(data: bytes, key, *, namespace: str = NAMESPACE, hash_alg: str = "sha512") -> str:
    """The armoured SSH signature of ``data`` with an Ed25519 private key (a cryptography
    Ed25519PrivateKey or a path to a key file)."""
    if not namespace:
        raise UserInputError("the signature namespace must not be empty")
    if hash_alg not in HASHES:
        raise UserInputError(f"hash algorithm {hash_alg!r}: use one of {', '.join(HASHES)}")
    if isinstance(key, (str, Path)):
        key = load_private_key(key)
    pub = public_key_of(key)
    sig = key.sign(_signed_blob(namespace, hash_alg, data))
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(pub.blob) + _string(namespace.encode())
            + _string(b"") + _string(hash_alg.encode()) + _string(_string(ED25519) + _string(sig)))
    return armor(blob)


@dataclass(frozen=True)
class Signature:
    key: PublicKey
    namespace: str
    hash_alg: str
    signature: bytes  # 64-byte Ed25519 signature


def parse_signature(text: str | bytes, what: str = "signature") -> Signature:
    r = _Reader(dearmor(text, what), what)
    if r.take(6) != MAGIC:
        raise SignatureError(f"{what}: bad magic (not SSHSIG)")
    v = r.uint32()
    if v != VERSION:
        raise SignatureError(f"{what}: unsupported SSHSIG version {v}")
    pub = PublicKey(_key_from_blob(r.string(), what))
    namespace = r.string().decode(errors="replace")
    r.string()  # reserved
    hash_alg = r.string().decode(errors="replace")
    inner = _Reader(r.string(), what)
    r.done()
    st = inner.string()
    if st != ED25519:
        raise SignatureError(f"{what}: signature type {st.decode(errors='replace')!r} "
                             "does not match the ssh-ed25519 key")
    sig = inner.string()
    inner.done()
    if hash_alg not in HASHES:
        raise SignatureError(f"{what}: unsupported hash algorithm {hash_alg!r}")
    return Signature(pub, namespace, hash_alg, sig)


def verify_bytes(data: bytes, sig: str | bytes, allowed: list[PublicKey] | str, *,
                 namespace: str = NAMESPACE, what: str = "signature") -> PublicKey:
    """Check an armoured SSH signature over ``data``; return the trusted key that made it.

    ``allowed``: trusted keys (:func:`parse_allowed`/:func:`load_allowed`, or the text of a
    ``.pub``/``allowed_signers`` file). Raises :class:`SignatureError` when the signature is
    malformed, for another namespace, by an untrusted key, or does not match the data."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(allowed, str):
        allowed = parse_allowed(allowed)
    s = parse_signature(sig, what)
    if s.namespace != namespace:
        raise SignatureError(f"{what}: made for namespace {s.namespace!r}, not {namespace!r}")
    trusted = next((k for k in allowed if k.raw == s.key.raw
                    and (k.namespaces is None or namespace in k.namespaces)), None)
    if trusted is None:
        raise SignatureError(f"{what}: made by {s.key.fingerprint}, which is not a trusted key")
    try:
        Ed25519PublicKey.from_public_bytes(s.key.raw).verify(
            s.signature, _signed_blob(namespace, s.hash_alg, data))
    except InvalidSignature:
        raise SignatureError(f"{what}: does not match the signed data "
                             f"(key {s.key.fingerprint})") from None
    return trusted
