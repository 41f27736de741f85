"""Secret material from files: passphrases and keyfiles, and 0600 temp files for tools.

Rules every caller follows: secret bytes are never logged, never part of an exception
message, never written to a manifest, meta.json or cache; files holding them are created
mode 0600 and removed (after overwriting) when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# cryptsetup's limits: an interactively typed passphrase (DEFAULT_PASSPHRASE_SIZE_MAX)
# and a key file (DEFAULT_KEYFILE_SIZE_MAXKB)
MAX_PASSPHRASE_BYTES = 512
MAX_KEYFILE_BYTES = 8192 * 1024


class SecretFileError(ValueError):
    """A secret file is unusable; the message names the file, never its content."""


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise SecretFileError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise SecretFileError(f"{path}: is a directory, expected a {what}") from None
    except OSError as e:
        raise SecretFileError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise SecretFileError(f"{path}: {what} longer than {limit} bytes")
    return data


def read_passphrase_file(path: str | os.PathLike[str]) -> bytes:
    """The passphrase as typed at a console: the file's bytes minus ONE trailing newline.

    A passphrase that could not be typed (empty, a NUL, CR or LF inside, longer than
    cryptsetup accepts at a prompt) is refused.
    """
    p = Path(path)
    data = _read(p, MAX_PASSPHRASE_BYTES + 2, "passphrase file")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise SecretFileError(f"{p}: passphrase file is empty")
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise SecretFileError(f"{p}: passphrase longer than {MAX_PASSPHRASE_BYTES} bytes "
                              "(cryptsetup's limit for a typed passphrase)")
    for ch, name in ((b"\n", "a newline"), (b"\r", "a carriage return"), (b"\0", "a NUL byte")):
        if ch in data:
            raise SecretFileError(f"{p}: passphrase contains {name}; it could not be typed at boot")
    return data


def read_keyfile(path: str | os.PathLike[str]) -> bytes:
    """A key file is used byte for byte (as ``cryptsetup --key-file``): nothing is stripped."""
    p = Path(path)
    data = _read(p, MAX_KEYFILE_BYTES, "key file")
    if not data:
        raise SecretFileError(f"{p}: key file is empty")
    return data


def secret_fingerprint(data: bytes) -> str:
    """A stable tag of a secret for cache keys and manifests: changes when the secret does.

    PBKDF2 with a fixed salt and many iterations, so the tag is as slow to test guesses
    against as a LUKS keyslot, unlike a plain hash of a (maybe short) passphrase.
    """
    dk = hashlib.pbkdf2_hmac("sha256", data, b"imagebuilder secret fingerprint v1", 200_000)
    return "pbkdf2-sha256:" + dk.hex()


def _shred(path: Path) -> None:
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def secret_tempfile(data: bytes, *, dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield the path of a mode-0600 temp file holding ``data``; zero and remove it after."""
    fd, name = tempfile.mkstemp(prefix=".secret-", dir=dir)
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        _shred(path)
