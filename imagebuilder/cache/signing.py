"""SSH signatures (``ssh-keygen -Y``, namespace ``imagebuilder``) with Ed25519 OpenSSH keys.

The same scheme git uses for signed commits: the private key users already have signs,
a public key (``KEY.pub``) verifies, and ``ssh-keygen`` itself can check any signature::

    echo "imagebuilder namespaces=\\"imagebuilder\\" $(cat KEY.pub)" > allowed_signers
    ssh-keygen -Y verify -n imagebuilder -I imagebuilder -f allowed_signers -s SIG < DATA

:func:`sign` returns the armored signature of some bytes; :func:`verify` accepts it only if
one of the trusted public keys made it over exactly these bytes in this namespace.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidConfigError, UserInputError
from ..run import run

NAMESPACE = "imagebuilder"
PRINCIPAL = "imagebuilder"
KEY_TYPES = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com")


class BadSignature(InvalidConfigError):
    """A signature is malformed, or not made by a trusted key over these bytes."""


def load_public_key(path: str | os.PathLike[str]) -> str:
    """'TYPE BASE64' of an OpenSSH Ed25519 public key file (one key)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: cannot read public key ({getattr(e, 'strerror', e)})") from None
    lines = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    fields = lines[0].split() if len(lines) == 1 else []
    if len(fields) < 2:
        raise UserInputError(f"{path}: expected one OpenSSH public key (ssh-ed25519 AAAA…)")
    ktype, blob = fields[0], fields[1]
    if ktype not in KEY_TYPES:
        raise UserInputError(f"{path}: key type {ktype!r} is not supported; use an Ed25519 key",
                             hint="ssh-keygen -t ed25519 -f KEY")
    try:
        base64.b64decode(blob, validate=True)
    except ValueError:
        raise UserInputError(f"{path}: the public key is not valid base64") from None
    return f"{ktype} {blob}"


def sign(data: bytes, key: str | os.PathLike[str]) -> str:
    """Sign data with the OpenSSH private key file key; return the armored signature."""
    if not Path(key).is_file():
        raise UserInputError(f"{key}: signing key not found")
    # bounded: a passphrase-protected key without an agent would wait for a terminal
    proc = run(["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", os.fspath(key)],
               input=data, timeout=60)
    sig = proc.stdout.decode()
    if "BEGIN SSH SIGNATURE" not in sig:
        raise BadSignature(f"{key}: ssh-keygen produced no signature")
    return sig


def verify(data: bytes, signature: str, trusted: Sequence[str | os.PathLike[str]]) -> str:
    """Check that a trusted key signed data; return ssh-keygen's verdict line.

    trusted: public key files. Raises :class:`BadSignature` otherwise.
    """
    keys = [load_public_key(p) for p in trusted]
    if not keys:
        raise UserInputError("no trusted public key given")
    with tempfile.TemporaryDirectory(prefix="imagebuilder-sig-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text("".join(f'{PRINCIPAL} namespaces="{NAMESPACE}" {k}\n' for k in keys))
        sigfile = Path(tmp) / "data.sig"
        sigfile.write_text(signature)
        proc = run(["ssh-keygen", "-Y", "verify", "-n", NAMESPACE, "-I", PRINCIPAL,
                    "-f", allowed, "-s", sigfile], input=data, check=False, timeout=60)
    out = (proc.stdout or b"").decode(errors="replace").strip()
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        reason = err[-1] if err else f"ssh-keygen exit status {proc.returncode}"
        raise BadSignature(f"signature not made by a trusted key: {reason}")
    return out.splitlines()[-1] if out else "Good signature"
