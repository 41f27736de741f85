"""LUKS2 containers written and read in userspace: no device-mapper, no root.

The on-disk format (cryptsetup's LUKS2, as ``cryptsetup luksDump`` reads it):

* two copies of the metadata, at 0 and at ``hdr_size``: a 4096-byte big-endian binary
  header (magic, version 2, sizes, seqid, label, subsystem, UUID, its own salt and a
  SHA-256 checksum over itself with the checksum zeroed plus the JSON area) followed by
  the JSON area (a NUL-terminated JSON text, zero-padded to ``hdr_size - 4096``);
* the keyslots area from ``2 * hdr_size``: per keyslot the volume key AF-split into 4000
  stripes (LUKS1 anti-forensic splitter, diffusion hash H(be32(i) || block)), encrypted
  with the keyslot cipher in 512-byte sectors (plain64 IV = sector index in the area)
  under a key derived from the passphrase with PBKDF2 or Argon2;
* the data segment at ``segments.0.offset`` (16 MiB): the payload encrypted with the
  volume key, one XTS data unit per ``sector_size`` bytes, IV = ``iv_tweak`` + the byte
  offset inside the segment / 512 (plain64 counts 512-byte units even with 4096-byte
  sectors: LUKS2 does not use dm-crypt's ``iv_large_sectors``).

A digest (PBKDF2 of the volume key) lets a reader tell the right volume key from a wrong
one. Tokens (clevis, systemd-tpm2) are JSON objects bound to keyslots; this module stores
and describes them, it does not talk to a TPM.

Encryption streams the source in chunks, reading holes of a sparse source as zeros
without touching the disk for them; every sector is still encrypted (an all-zero
plaintext sector becomes a random-looking ciphertext sector), so the container is fully
allocated up to its end. Randomness (volume key, salts, AF stripes, UUID) comes from
``os.urandom`` unless an :class:`Entropy` with a seed is given: then the container is a
pure function of the seed and the inputs, and whoever knows the seed knows the volume key.

Secrets (passphrases, key files, volume keys) are held in ``bytes`` fields with
``repr=False`` and never appear in log records or exception messages.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import logging
import os
import secrets
import struct
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import BadImageError, InvalidConfigError, UserInputError
from ..fsutil import atomic_output

log = logging.getLogger(__name__)

MAGIC_PRIMARY = b"LUKS\xba\xbe"
MAGIC_SECONDARY = b"SKUL\xba\xbe"
BINARY_HEADER = struct.Struct(">6sHQQ48s32s64s40s48sQ184s64s3584s")
BINARY_SIZE = 4096
CSUM_OFFSET = 448
METADATA_SIZES = tuple(16384 << i for i in range(9))  # 16 KiB .. 4 MiB
DEFAULT_METADATA_SIZE = 16384
DEFAULT_DATA_OFFSET = 16 << 20
MAX_KEYSLOTS_SIZE = 128 << 20
AF_STRIPES = 4000
MAX_OBJECTS = 32  # keyslots, tokens, segments, digests
LABEL_MAX = 47  # 48-byte field including the NUL

# cipher -> accepted volume key sizes in bytes (aes-xts: AES-128 or AES-256, two keys each)
CIPHERS: dict[str, tuple[int, ...]] = {"aes-xts-plain64": (32, 64)}
HASHES = ("sha1", "sha256", "sha384", "sha512")
SECTOR_SIZES = (512, 1024, 2048, 4096)
KDF_TYPES = ("pbkdf2", "argon2id", "argon2i")

PBKDF2_MIN_ITERATIONS = 1000
ARGON2_MIN_TIME = 4
ARGON2_MIN_MEMORY = 32  # KiB
ARGON2_MAX_MEMORY = 4 << 20  # KiB (4 GiB), cryptsetup's ceiling
ARGON2_MAX_CPUS = 4
DEFAULT_DIGEST_ITERATIONS = 100_000

CHUNK = 4 << 20  # streaming unit, a multiple of every sector size


class WrongKeyError(UserInputError):
    """No keyslot opens with the given passphrase or key file."""


# --------------------------------------------------------------------------- randomness


class Entropy:
    """Where a new container's random bytes come from.

    Without a seed: the OS CSPRNG. With a seed: SHAKE-256 over a domain tag, the seed
    and a purpose label, so every purpose gets its own stream and the same seed always
    gives the same container. Each purpose must be asked for once.
    """

    def __init__(self, seed: bytes | None = None):
        self._seed = seed

    @property
    def deterministic(self) -> bool:
        return self._seed is not None

    def take(self, purpose: str, n: int) -> bytes:
        if self._seed is None:
            return secrets.token_bytes(n)
        h = hashlib.shake_256()
        h.update(b"imagebuilder.luks2\0" + len(self._seed).to_bytes(4, "big") + self._seed)
        h.update(purpose.encode() + b"\0")
        return h.digest(n)

    def uuid(self) -> str:
        return str(uuidlib.UUID(bytes=self.take("uuid", 16), version=4))

    def __repr__(self) -> str:
        return f"Entropy(deterministic={self.deterministic})"


# --------------------------------------------------------------------------- KDFs


@dataclass(frozen=True)
class Kdf:
    """A keyslot KDF: PBKDF2-HMAC-<hash> or Argon2i/Argon2id (memory in KiB)."""

    type: str = "argon2id"
    hash: str = "sha256"
    iterations: int = 0
    time: int = 4
    memory: int = 262144
    cpus: int = 4

    @classmethod
    def pbkdf2(cls, hash: str = "sha256", iterations: int | None = None) -> "Kdf":
        if iterations is None:
            iterations = 600_000 if hash in ("sha1", "sha256") else 210_000
        return cls(type="pbkdf2", hash=hash, iterations=iterations, time=0, memory=0, cpus=0)

    @classmethod
    def argon2(cls, type: str = "argon2id", time: int = 4, memory: int = 262144,
               cpus: int = 4) -> "Kdf":
        return cls(type=type, hash="", iterations=0, time=time, memory=memory, cpus=cpus)

    def check(self, *, reading: bool = False) -> None:
        """Raise ValueError for parameters cryptsetup would refuse."""
        if self.type not in KDF_TYPES:
            raise ValueError(f"unknown kdf {self.type!r} (expected one of {', '.join(KDF_TYPES)})")
        if self.type == "pbkdf2":
            if self.hash not in HASHES:
                raise ValueError(f"unsupported pbkdf2 hash {self.hash!r}")
            if self.iterations < PBKDF2_MIN_ITERATIONS or self.iterations > 0xFFFFFFFF:
                raise ValueError(f"pbkdf2 iterations {self.iterations} out of range "
                                 f"({PBKDF2_MIN_ITERATIONS}..4294967295)")
            return
        min_time = 1 if reading else ARGON2_MIN_TIME
        if not (min_time <= self.time <= 0xFFFFFFFF):
            raise ValueError(f"argon2 time cost {self.time} out of range")
        if not (ARGON2_MIN_MEMORY <= self.memory <= ARGON2_MAX_MEMORY):
            raise ValueError(f"argon2 memory {self.memory} KiB out of range "
                             f"({ARGON2_MIN_MEMORY}..{ARGON2_MAX_MEMORY})")
        if not (1 <= self.cpus <= (16 if reading else ARGON2_MAX_CPUS)):
            raise ValueError(f"argon2 parallel cost {self.cpus} out of range")

    def derive(self, secret: bytes, salt: bytes, length: int) -> bytes:
        if self.type == "pbkdf2":
            return hashlib.pbkdf2_hmac(self.hash, secret, salt, self.iterations, length)
        from cryptography.hazmat.primitives.kdf import argon2

        cls = argon2.Argon2id if self.type == "argon2id" else argon2.Argon2i
        return cls(salt=salt, length=length, iterations=self.time, lanes=self.cpus,
                   memory_cost=self.memory).derive(secret)

    def to_json(self, salt: bytes) -> dict[str, Any]:
        if self.type == "pbkdf2":
            return {"type": "pbkdf2", "hash": self.hash, "iterations": self.iterations,
                    "salt": _b64(salt)}
        return {"type": self.type, "time": self.time, "memory": self.memory, "cpus": self.cpus,
                "salt": _b64(salt)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> tuple["Kdf", bytes]:
        t = _get(d, "type", str, where)
        salt = _unb64(_get(d, "salt", str, where), f"{where}.salt")
        if t == "pbkdf2":
            kdf = cls.pbkdf2(_get(d, "hash", str, where), _get(d, "iterations", int, where))
        elif t in ("argon2id", "argon2i"):
            kdf = cls.argon2(t, _get(d, "time", int, where), _get(d, "memory", int, where),
                             _get(d, "cpus", int, where))
        else:
            raise BadImageError(f"{where}.type: unsupported kdf {t!r}")
        try:
            kdf.check(reading=True)
        except ValueError as e:
            raise BadImageError(f"{where}: {e}") from None
        return kdf, salt


DEFAULT_KDF = Kdf.argon2()


# --------------------------------------------------------------------------- primitives


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str, where: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise BadImageError(f"{where}: not base64") from None


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def _diffuse(block: bytes, hash_name: str) -> bytes:
    """LUKS AF diffusion: each digest-sized piece i becomes hash(be32(i) || piece)[:len(piece)]."""
    size = hashlib.new(hash_name).digest_size
    out = bytearray()
    for i, start in enumerate(range(0, len(block), size)):
        piece = block[start:start + size]
        out += hashlib.new(hash_name, i.to_bytes(4, "big") + piece).digest()[:len(piece)]
    return bytes(out)


def af_split(key: bytes, stripes: int, hash_name: str, random_stripes: bytes) -> bytes:
    """Split ``key`` into ``stripes`` blocks; ``random_stripes`` supplies the first stripes-1."""
    n = len(key)
    if len(random_stripes) != n * (stripes - 1):
        raise ValueError("random_stripes has the wrong length")
    buf = bytes(n)
    for i in range(stripes - 1):
        buf = _diffuse(_xor(random_stripes[i * n:(i + 1) * n], buf), hash_name)
    return random_stripes + _xor(key, buf)


def af_merge(material: bytes, key_size: int, stripes: int, hash_name: str) -> bytes:
    n = key_size
    buf = bytes(n)
    for i in range(stripes - 1):
        buf = _diffuse(_xor(material[i * n:(i + 1) * n], buf), hash_name)
    return _xor(material[(stripes - 1) * n:stripes * n], buf)


class SectorCipher:
    """aes-xts-plain64 on whole sectors: one XTS data unit per sector, IV in 512-byte units."""

    def __init__(self, key: bytes, cipher: str, sector_size: int, iv_tweak: int = 0):
        if cipher not in CIPHERS:
            raise ValueError(f"unsupported cipher {cipher!r}")
        if len(key) not in CIPHERS[cipher]:
            raise ValueError(f"{cipher} needs a {' or '.join(str(8 * k) for k in CIPHERS[cipher])}-bit key")
        self._alg = algorithms.AES(key)
        self.sector_size = sector_size
        self.iv_tweak = iv_tweak

    def __repr__(self) -> str:
        return f"SectorCipher(sector_size={self.sector_size})"

    def _run(self, data: bytes | memoryview, offset: int, encrypt: bool) -> bytes:
        """``offset``: byte offset of ``data`` inside the segment (a multiple of sector_size)."""
        s = self.sector_size
        if offset % s or len(data) % s:
            raise ValueError("data must be whole sectors at a sector boundary")
        n = len(data)
        mv = memoryview(data)
        out = bytearray(n + 15)  # update_into wants block_size - 1 bytes of slack
        om = memoryview(out)
        alg = self._alg
        iv = self.iv_tweak + offset // 512
        step = s // 512
        for pos in range(0, n, s):
            c = Cipher(alg, modes.XTS((iv & 0xFFFFFFFFFFFFFFFF).to_bytes(16, "little")))
            (c.encryptor() if encrypt else c.decryptor()).update_into(mv[pos:pos + s],
                                                                      om[pos:pos + s + 15])
            iv += step
        om.release()
        del out[n:]
        return out

    def encrypt(self, data: bytes | memoryview, offset: int) -> bytearray:
        return self._run(data, offset, True)

    def decrypt(self, data: bytes | memoryview, offset: int) -> bytearray:
        return self._run(data, offset, False)


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def area_size_for(key_size: int, stripes: int = AF_STRIPES) -> int:
    """Keyslot area bytes for a key of ``key_size`` bytes (rounded to 4096 as cryptsetup does)."""
    return _pad(key_size * stripes, 4096)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Luks2Params:
    """Everything about a new container except its secrets."""

    cipher: str = "aes-xts-plain64"
    key_size: int = 512  # bits
    kdf: Kdf = DEFAULT_KDF
    af_hash: str = "sha256"
    digest_hash: str = "sha256"
    digest_iterations: int = DEFAULT_DIGEST_ITERATIONS
    sector_size: int = 4096
    label: str = ""
    subsystem: str = ""
    uuid: str | None = None  # None: from the Entropy (random, or derived from the seed)
    metadata_size: int = DEFAULT_METADATA_SIZE
    data_offset: int = DEFAULT_DATA_OFFSET
    flags: tuple[str, ...] = ()  # config flags, e.g. allow-discards

    @property
    def key_bytes(self) -> int:
        return self.key_size // 8

    @property
    def keyslots_size(self) -> int:
        return self.data_offset - 2 * self.metadata_size

    def check(self) -> None:
        """Raise InvalidConfigError for a combination cryptsetup would refuse."""
        def bad(key: str, msg: str) -> None:
            raise InvalidConfigError(f"luks2 {key}: {msg}")

        if self.cipher not in CIPHERS:
            bad("cipher", f"{self.cipher!r} is not supported (supported: {', '.join(CIPHERS)})")
        if self.key_size % 8 or self.key_bytes not in CIPHERS[self.cipher]:
            bad("key_size", f"{self.key_size} bits does not fit {self.cipher} "
                f"(use {' or '.join(str(8 * k) for k in CIPHERS[self.cipher])})")
        try:
            self.kdf.check()
        except ValueError as e:
            bad("kdf", str(e))
        for k in ("af_hash", "digest_hash"):
            if getattr(self, k) not in HASHES:
                bad(k, f"{getattr(self, k)!r} is not one of {', '.join(HASHES)}")
        if self.digest_iterations < PBKDF2_MIN_ITERATIONS:
            bad("digest_iterations", f"must be at least {PBKDF2_MIN_ITERATIONS}")
        if self.sector_size not in SECTOR_SIZES:
            bad("sector_size", f"{self.sector_size} is not one of {SECTOR_SIZES}")
        for k, limit in (("label", LABEL_MAX), ("subsystem", LABEL_MAX)):
            v = getattr(self, k).encode()
            if len(v) > limit or b"\0" in v:
                bad(k, f"at most {limit} bytes, no NUL")
        if self.uuid is not None:
            try:
                uuidlib.UUID(self.uuid)
            except ValueError:
                bad("uuid", f"{self.uuid!r} is not a UUID")
        if self.metadata_size not in METADATA_SIZES:
            bad("metadata_size", f"{self.metadata_size} is not one of {METADATA_SIZES}")
        ks = self.keyslots_size
        if self.data_offset % 4096 or ks <= 0 or ks % 4096 or ks > MAX_KEYSLOTS_SIZE:
            bad("data_offset", f"{self.data_offset} leaves a keyslots area of {ks} bytes "
                f"(must be a positive multiple of 4096 up to {MAX_KEYSLOTS_SIZE})")
        if self.data_offset % self.sector_size:
            bad("data_offset", "must be a multiple of the sector size")


@dataclass(frozen=True)
class KeySlotSpec:
    """One keyslot to create: a passphrase or key file content, optionally its own KDF."""

    secret: bytes = field(repr=False)
    kdf: Kdf | None = None
    priority: int | None = None  # None: not written (normal); 0 ignore, 1 normal, 2 prefer
    # an empty passphrase opens this slot; only for a first-boot slot that is wiped once a
    # TPM2 is enrolled (systemd-cryptsetup tries it with ``try-empty-password=yes``)
    allow_empty: bool = False


# --------------------------------------------------------------------------- tokens

# token type -> keys it must carry (the shapes clevis 19 and systemd 252 write)
TOKEN_FIELDS: dict[str, tuple[str, ...]] = {
    "clevis": ("jwe",),
    "systemd-tpm2": ("tpm2-blob", "tpm2-pcrs", "tpm2-policy-hash"),
    "systemd-fido2": ("fido2-credential", "fido2-salt", "fido2-rp"),
    "systemd-recovery": (),
}


def check_token(token: Any, keyslot_ids: Sequence[str], where: str) -> None:
    """Raise BadImageError unless ``token`` is a well-formed LUKS2 token object."""
    if not isinstance(token, dict):
        raise BadImageError(f"{where}: expected an object")
    t = token.get("type")
    if not isinstance(t, str) or not t:
        raise BadImageError(f"{where}.type: missing")
    ks = token.get("keyslots")
    if not isinstance(ks, list) or not all(isinstance(k, str) for k in ks):
        raise BadImageError(f"{where}.keyslots: expected a list of keyslot ids (strings)")
    for k in ks:
        if k not in keyslot_ids:
            raise BadImageError(f"{where}.keyslots: keyslot {k!r} does not exist")
    for f in TOKEN_FIELDS.get(t, ()):
        if f not in token:
            raise BadImageError(f"{where}.{f}: required for a {t} token")


def token_summary(token: Mapping[str, Any]) -> dict[str, Any]:
    """What a token binds to, without its secrets: type, keyslots, pin and PCRs."""
    out: dict[str, Any] = {"type": token.get("type"), "keyslots": list(token.get("keyslots", []))}
    if token.get("type") == "systemd-tpm2":
        out["pcrs"] = token.get("tpm2-pcrs")
        out["pcr_bank"] = token.get("tpm2-pcr-bank")
        out["pin"] = token.get("tpm2-pin", False)
    elif token.get("type") == "clevis":
        try:
            prot = token["jwe"]["protected"]
            hdr = json.loads(base64.urlsafe_b64decode(prot + "=" * (-len(prot) % 4)))
            cl = hdr.get("clevis", {})
            out["pin"] = cl.get("pin")
            pin_cfg = cl.get(cl.get("pin"), {}) if isinstance(cl.get("pin"), str) else {}
            if isinstance(pin_cfg, dict) and "pcr_ids" in pin_cfg:
                out["pcrs"] = [int(p) for p in str(pin_cfg["pcr_ids"]).split(",") if p.strip()]
        except (KeyError, TypeError, ValueError):
            out["pin"] = None
    return out


# --------------------------------------------------------------------------- writing


def _binary_header(*, magic: bytes, hdr_size: int, seqid: int, label: str, salt: bytes,
                   uuid: str, subsystem: str, hdr_offset: int, json_area: bytes) -> bytes:
    raw = BINARY_HEADER.pack(magic, 2, hdr_size, seqid, label.encode(), b"sha256", salt,
                             uuid.encode(), subsystem.encode(), hdr_offset, b"", b"", b"")
    csum = hashlib.sha256(raw + json_area).digest()
    return raw[:CSUM_OFFSET] + csum.ljust(64, b"\0") + raw[CSUM_OFFSET + 64:]


@dataclass(frozen=True)
class HeaderImage:
    """The metadata and keyslot areas of a new container, as sparse (offset, bytes) writes."""

    writes: tuple[tuple[int, bytes], ...] = field(repr=False)
    size: int  # = the data offset: everything before the data segment
    metadata: dict[str, Any]
    uuid: str
    label: str


def build_header(params: Luks2Params, volume_key: bytes, keys: Sequence[KeySlotSpec | bytes],
                 *, entropy: Entropy | None = None,
                 tokens: Sequence[Mapping[str, Any]] = ()) -> HeaderImage:
    """Lay out a LUKS2 header with one keyslot per entry of ``keys``, in order (ids 0..)."""
    params.check()
    entropy = entropy or Entropy()
    if len(volume_key) != params.key_bytes:
        raise ValueError(f"volume key must be {params.key_bytes} bytes")
    specs = [k if isinstance(k, KeySlotSpec) else KeySlotSpec(k) for k in keys]
    if not specs:
        raise InvalidConfigError("luks2: at least one key (passphrase or key file) is needed")
    if len(specs) > MAX_OBJECTS or len(tokens) > MAX_OBJECTS:
        raise InvalidConfigError(f"luks2: at most {MAX_OBJECTS} keyslots and tokens")
    area_size = area_size_for(params.key_bytes)
    first = 2 * params.metadata_size
    if len(specs) * area_size > params.keyslots_size:
        raise InvalidConfigError(f"luks2: {len(specs)} keyslots do not fit a keyslots area "
                                 f"of {params.keyslots_size} bytes")
    writes: list[tuple[int, bytes]] = []
    keyslots: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        kdf = spec.kdf or params.kdf
        try:
            kdf.check()
        except ValueError as e:
            raise InvalidConfigError(f"luks2 keyslot {i}: {e}") from None
        if not spec.secret and not spec.allow_empty:
            raise InvalidConfigError(f"luks2 keyslot {i}: empty passphrase")
        salt = entropy.take(f"keyslot.{i}.salt", 32)
        n = params.key_bytes
        material = af_split(volume_key, AF_STRIPES, params.af_hash,
                            entropy.take(f"keyslot.{i}.af", n * (AF_STRIPES - 1)))
        material += bytes(_pad(len(material), 512) - len(material))
        slot_key = kdf.derive(spec.secret, salt, n)
        offset = first + i * area_size
        writes.append((offset, SectorCipher(slot_key, params.cipher, 512).encrypt(material, 0)))
        ks: dict[str, Any] = {
            "type": "luks2", "key_size": n,
            "af": {"type": "luks1", "stripes": AF_STRIPES, "hash": params.af_hash},
            "area": {"type": "raw", "offset": str(offset), "size": str(area_size),
                     "encryption": params.cipher, "key_size": n},
            "kdf": kdf.to_json(salt),
        }
        if spec.priority is not None:
            ks["priority"] = spec.priority
        keyslots[str(i)] = ks
    token_objs: dict[str, Any] = {}
    for i, tok in enumerate(tokens):
        check_token(dict(tok), list(keyslots), f"tokens.{i}")
        token_objs[str(i)] = dict(tok)
    dsalt = entropy.take("digest.salt", 32)
    digest = hashlib.pbkdf2_hmac(params.digest_hash, volume_key, dsalt, params.digest_iterations)
    config: dict[str, Any] = {"json_size": str(params.metadata_size - BINARY_SIZE),
                              "keyslots_size": str(params.keyslots_size)}
    if params.flags:
        config["flags"] = list(params.flags)
    metadata = {
        "keyslots": keyslots,
        "tokens": token_objs,
        "segments": {"0": {"type": "crypt", "offset": str(params.data_offset), "size": "dynamic",
                           "iv_tweak": "0", "encryption": params.cipher,
                           "sector_size": params.sector_size}},
        "digests": {"0": {"type": "pbkdf2", "keyslots": list(keyslots), "segments": ["0"],
                          "hash": params.digest_hash, "iterations": params.digest_iterations,
                          "salt": _b64(dsalt), "digest": _b64(digest)}},
        "config": config,
    }
    text = json.dumps(metadata, separators=(",", ":")).encode()
    json_len = params.metadata_size - BINARY_SIZE
    if len(text) + 1 > json_len:
        raise InvalidConfigError(f"luks2: metadata JSON ({len(text)} bytes) does not fit "
                                 f"{json_len} bytes; use a larger metadata size")
    json_area = text + bytes(json_len - len(text))
    uuid = params.uuid.lower() if params.uuid else entropy.uuid()
    for which, magic in ((0, MAGIC_PRIMARY), (1, MAGIC_SECONDARY)):
        hdr = _binary_header(magic=magic, hdr_size=params.metadata_size, seqid=1,
                             label=params.label, salt=entropy.take(f"header.{which}.salt", 64),
                             uuid=uuid, subsystem=params.subsystem,
                             hdr_offset=which * params.metadata_size, json_area=json_area)
        writes.append((which * params.metadata_size, hdr + json_area))
    writes.sort()
    return HeaderImage(writes=tuple(writes), size=params.data_offset, metadata=metadata,
                       uuid=uuid, label=params.label)


def new_volume_key(params: Luks2Params, entropy: Entropy) -> bytes:
    return entropy.take("volume-key", params.key_bytes)


ProgressFn = Callable[[int, int], None]


def _chunks(fd: int, size: int, chunk: int) -> Iterator[tuple[int, bytes]]:
    """Read a file as (offset, bytes) chunks on a fixed grid (so sectors never straddle
    two chunks); a chunk that is wholly a hole (SEEK_DATA) comes back as zeros unread."""
    zeros = bytes(chunk)
    next_data, probe = -1, True
    pos = 0
    while pos < size:
        n = min(chunk, size - pos)
        if probe and next_data < pos:
            try:
                next_data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                # ENXIO: nothing but a hole up to the end; else no SEEK_DATA here: read it all
                next_data, probe = (size, True) if e.errno == errno.ENXIO else (pos, False)
        if probe and next_data >= pos + n:
            yield pos, zeros[:n]
        else:
            buf = os.pread(fd, n, pos)
            if len(buf) != n:
                raise BadImageError(f"short read at offset {pos}")
            yield pos, buf
        pos += n


def encrypt_stream(src_fd: int, size: int, dst_fd: int, dst_offset: int, cipher: SectorCipher,
                   *, progress: ProgressFn | None = None) -> None:
    """Encrypt ``size`` bytes of src_fd into dst_fd at dst_offset (segment offset 0 there)."""
    _transform(src_fd, 0, size, dst_fd, dst_offset, cipher.encrypt, progress)


def decrypt_stream(src_fd: int, src_offset: int, size: int, dst_fd: int, cipher: SectorCipher,
                   *, progress: ProgressFn | None = None) -> None:
    _transform(src_fd, src_offset, size, dst_fd, 0, cipher.decrypt, progress)


def _transform(src_fd: int, src_offset: int, size: int, dst_fd: int, dst_offset: int,
               fn: Callable[[bytes, int], bytearray], progress: ProgressFn | None) -> None:
    done = 0
    if src_offset == 0:
        source = _chunks(src_fd, size, CHUNK)
    else:
        source = ((pos, os.pread(src_fd, min(CHUNK, size - pos), src_offset + pos))
                  for pos in range(0, size, CHUNK))
    for pos, buf in source:
        if len(buf) % 512:
            raise BadImageError(f"short read at offset {src_offset + pos}")
        out = fn(buf, pos)
        view = memoryview(out)
        while view:
            n = os.pwrite(dst_fd, view, dst_offset + pos + (len(out) - len(view)))
            view = view[n:]
        done += len(buf)
        if progress:
            progress(done, size)


@dataclass(frozen=True)
class Luks2Result:
    """What was written (no secrets): for meta.json, the manifest and tests."""

    uuid: str
    label: str
    cipher: str
    key_size: int  # bits
    pbkdf: str
    sector_size: int
    data_offset: int
    payload_size: int
    keyslots: int
    tokens: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"tokens": list(self.tokens)}


def write_container(src: str | os.PathLike[str], dst_f: BinaryIO, *, params: Luks2Params,
                    keys: Sequence[KeySlotSpec | bytes], dst_offset: int = 0,
                    entropy: Entropy | None = None, volume_key: bytes | None = None,
                    tokens: Sequence[Mapping[str, Any]] = (),
                    progress: ProgressFn | None = None) -> Luks2Result:
    """Write a LUKS2 container holding the image ``src`` into ``dst_f`` at ``dst_offset``.

    The bytes from dst_offset to dst_offset + data_offset + size(src) are written (the
    header's unused parts as holes when the file is new); nothing else is touched, so the
    target can be a partition inside a disk image.
    """
    entropy = entropy or Entropy()
    params.check()
    src_path = Path(src)
    try:
        src_fd = os.open(src_path, os.O_RDONLY)
    except OSError as e:
        raise UserInputError(f"{src_path}: cannot read: {e.strerror}") from None
    try:
        size = os.fstat(src_fd).st_size
        if size == 0 or size % params.sector_size:
            raise InvalidConfigError(f"{src_path}: size {size} is not a positive multiple of the "
                                     f"LUKS2 sector size {params.sector_size}")
        vk = volume_key if volume_key is not None else new_volume_key(params, entropy)
        header = build_header(params, vk, keys, entropy=entropy, tokens=tokens)
        dst_fd = dst_f.fileno()
        end = dst_offset + header.size + size
        old_size = os.fstat(dst_fd).st_size
        if old_size < end:
            os.ftruncate(dst_fd, end)
        # zero what a previous occupant left in the header region (a new file has holes)
        if old_size > dst_offset:
            _zero_range(dst_fd, dst_offset, min(header.size, old_size - dst_offset))
        for off, data in header.writes:
            os.pwrite(dst_fd, data, dst_offset + off)
        log.info("encrypting %d MiB into a LUKS2 container (%s, %d-bit key, %s, sector %d)",
                 size >> 20, params.cipher, params.key_size, params.kdf.type, params.sector_size)
        encrypt_stream(src_fd, size, dst_fd, dst_offset + header.size,
                       SectorCipher(vk, params.cipher, params.sector_size), progress=progress)
    finally:
        os.close(src_fd)
    return Luks2Result(uuid=header.uuid, label=params.label, cipher=params.cipher,
                       key_size=params.key_size, pbkdf=params.kdf.type,
                       sector_size=params.sector_size, data_offset=params.data_offset,
                       payload_size=size, keyslots=len(keys),
                       tokens=tuple(str(t.get("type")) for t in tokens))


def _zero_range(fd: int, offset: int, length: int) -> None:
    zeros = bytes(1 << 20)
    pos = offset
    while pos < offset + length:
        pos += os.pwrite(fd, zeros[:min(len(zeros), offset + length - pos)], pos)


def encrypt_image(src: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                  params: Luks2Params, keys: Sequence[KeySlotSpec | bytes],
                  entropy: Entropy | None = None, volume_key: bytes | None = None,
                  tokens: Sequence[Mapping[str, Any]] = (), force: bool = False,
                  progress: ProgressFn | None = None) -> Luks2Result:
    """Encrypt the image file ``src`` into a new LUKS2 container file ``dest`` (atomically)."""
    with atomic_output(dest, force=force) as (_tmp, f):
        return write_container(src, f, params=params, keys=keys, entropy=entropy,
                               volume_key=volume_key, tokens=tokens, progress=progress)


# --------------------------------------------------------------------------- reading


def _get(d: Mapping[str, Any], key: str, tp: type, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise BadImageError(f"{where}.{key}: missing")
    v = d[key]
    if tp is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise BadImageError(f"{where}.{key}: expected an integer")
    if tp is not int and not isinstance(v, tp):
        raise BadImageError(f"{where}.{key}: expected {tp.__name__}")
    return v


def _u64(d: Mapping[str, Any], key: str, where: str) -> int:
    s = _get(d, key, str, where)
    if not (s.isascii() and s.isdigit()) or len(s) > 20 or int(s) >= 1 << 64:
        raise BadImageError(f"{where}.{key}: expected a decimal string, got {s!r}")
    return int(s)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Keyslot:
    id: str
    key_size: int
    area_offset: int
    area_size: int
    area_cipher: str
    area_key_size: int
    kdf: Kdf
    salt: bytes = field(repr=False)
    af_hash: str = "sha256"
    stripes: int = AF_STRIPES
    priority: int = 1


@dataclass(frozen=True)
class Digest:
    id: str
    keyslots: tuple[str, ...]
    segments: tuple[str, ...]
    hash: str
    iterations: int
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def matches(self, volume_key: bytes) -> bool:
        calc = hashlib.pbkdf2_hmac(self.hash, volume_key, self.salt, self.iterations, len(self.digest))
        return secrets.compare_digest(calc, self.digest)


@dataclass(frozen=True)
class Luks2Header:
    """A verified LUKS2 header as read from a file (the copy that was used)."""

    offset: int  # where the container starts in the file
    hdr_size: int
    seqid: int
    label: str
    subsystem: str
    uuid: str
    used_copy: str  # "primary" | "secondary"
    metadata: dict[str, Any]
    keyslots: dict[str, Keyslot]
    digests: dict[str, Digest]
    cipher: str
    sector_size: int
    data_offset: int
    data_size: int | None  # None: "dynamic" (to the end of the device)
    iv_tweak: int
    warnings: tuple[str, ...] = ()

    @property
    def key_size(self) -> int:
        """Volume key size in bytes (from the keyslots; 0 when there are none)."""
        return next(iter(self.keyslots.values())).key_size if self.keyslots else 0

    @property
    def tokens(self) -> dict[str, Any]:
        return self.metadata.get("tokens", {})

    def summary(self) -> dict[str, Any]:
        """Facts for ``inspect`` and meta.json: no salts, digests or key material."""
        return {
            "uuid": self.uuid, "label": self.label, "subsystem": self.subsystem,
            "seqid": self.seqid, "metadata_size": self.hdr_size, "header_copy": self.used_copy,
            "cipher": self.cipher, "key_size": self.key_size * 8, "sector_size": self.sector_size,
            "data_offset": self.data_offset, "data_size": self.data_size or "dynamic",
            "keyslots": {k: {"kdf": s.kdf.type, **({"hash": s.kdf.hash} if s.kdf.type == "pbkdf2" else
                                                   {"time": s.kdf.time, "memory": s.kdf.memory,
                                                    "cpus": s.kdf.cpus}),
                             "priority": s.priority}
                         for k, s in sorted(self.keyslots.items(), key=lambda kv: int(kv[0]))},
            "tokens": {k: token_summary(t) for k, t in sorted(self.tokens.items(),
                                                               key=lambda kv: int(kv[0]))},
            "flags": list(self.metadata.get("config", {}).get("flags", [])),
            "warnings": list(self.warnings),
        }


def _read_copy(f: BinaryIO, base: int, at: int, expect_magic: bytes,
               name: str) -> tuple[tuple, bytes]:
    """Read and verify one header copy; raise BadImageError saying what is wrong with it."""
    f.seek(base + at)
    raw = f.read(BINARY_SIZE)
    if len(raw) < BINARY_SIZE:
        raise BadImageError(f"{name} header (offset {at}): truncated")
    fields = BINARY_HEADER.unpack(raw)
    magic, version, hdr_size, _seqid, _label, csum_alg = fields[:6]
    hdr_offset, csum = fields[9], fields[11]
    if magic != expect_magic:
        raise BadImageError(f"{name} header (offset {at}): no LUKS2 magic")
    if version != 2:
        raise BadImageError(f"{name} header (offset {at}): LUKS version {version}, not 2")
    if hdr_size not in METADATA_SIZES:
        raise BadImageError(f"{name} header (offset {at}): bad header size {hdr_size}")
    if hdr_offset != at:
        raise BadImageError(f"{name} header (offset {at}): records offset {hdr_offset}")
    alg = _cstr(csum_alg)
    if alg not in HASHES:
        raise BadImageError(f"{name} header (offset {at}): unsupported checksum {alg!r}")
    json_area = f.read(hdr_size - BINARY_SIZE)
    if len(json_area) < hdr_size - BINARY_SIZE:
        raise BadImageError(f"{name} header (offset {at}): JSON area truncated")
    h = hashlib.new(alg)
    h.update(raw[:CSUM_OFFSET] + bytes(64) + raw[CSUM_OFFSET + 64:])
    h.update(json_area)
    if not secrets.compare_digest(h.digest(), csum[:h.digest_size]):
        raise BadImageError(f"{name} header (offset {at}): checksum mismatch")
    return fields, json_area


def read_header(f: BinaryIO, offset: int = 0) -> Luks2Header:
    """Read the LUKS2 header at ``offset`` of an open file; verify both copies.

    A damaged copy is reported in ``warnings`` (naming the copy and the damage) and the
    other one is used; both damaged raises BadImageError naming both.
    """
    errors: list[str] = []
    good: list[tuple[str, tuple, bytes]] = []
    try:
        fields, area = _read_copy(f, offset, 0, MAGIC_PRIMARY, "primary")
        good.append(("primary", fields, area))
        secondary_at: Sequence[int] = (fields[2],)
    except BadImageError as e:
        errors.append(e.message)
        secondary_at = METADATA_SIZES
    for at in secondary_at:
        f.seek(offset + at)
        if len(secondary_at) > 1 and f.read(6) != MAGIC_SECONDARY:
            continue
        try:
            fields2, area2 = _read_copy(f, offset, at, MAGIC_SECONDARY, "secondary")
            good.append(("secondary", fields2, area2))
        except BadImageError as e:
            errors.append(e.message)
        break
    else:
        if len(secondary_at) > 1:
            errors.append("secondary header: not found")
    if not good:
        if errors and all("no LUKS2 magic" in e or "not found" in e for e in errors):
            raise BadImageError("not a LUKS2 container (no LUKS2 header)")
        raise BadImageError("LUKS2 header unusable: " + "; ".join(errors))
    warnings = list(errors)
    good.sort(key=lambda g: -g[1][3])  # highest seqid first; primary first on a tie (stable)
    name, fields, area = good[0]
    if len(good) == 2 and good[0][1][3] != good[1][1][3]:
        warnings.append(f"{good[1][0]} header has an older seqid ({good[1][1][3]} < "
                        f"{fields[3]}); using the {name} header")
    elif len(good) == 1:
        warnings.append(f"using the {name} header")
    text = area.split(b"\0", 1)[0]
    try:
        metadata = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadImageError(f"{name} header: JSON metadata unreadable: {e}") from None
    return _parse_metadata(metadata, fields, name, offset, tuple(warnings))


def _parse_metadata(md: Any, fields: tuple, name: str, offset: int,
                    warnings: tuple[str, ...]) -> Luks2Header:
    hdr_size = fields[2]
    if not isinstance(md, dict):
        raise BadImageError("LUKS2 metadata: not a JSON object")
    for k in ("keyslots", "tokens", "segments", "digests", "config"):
        if not isinstance(md.get(k), dict):
            raise BadImageError(f"LUKS2 metadata: {k}: missing")
        if len(md[k]) > MAX_OBJECTS and k != "config":
            raise BadImageError(f"LUKS2 metadata: {k}: more than {MAX_OBJECTS} entries")
        if k != "config" and not all(i.isascii() and i.isdigit() and len(i) < 4 for i in md[k]):
            raise BadImageError(f"LUKS2 metadata: {k}: ids must be decimal strings")
    config = md["config"]
    if _u64(config, "json_size", "config") != hdr_size - BINARY_SIZE:
        raise BadImageError("LUKS2 metadata: config.json_size differs from the header size")
    keyslots_size = _u64(config, "keyslots_size", "config")
    area_lo, area_hi = 2 * hdr_size, 2 * hdr_size + keyslots_size
    keyslots: dict[str, Keyslot] = {}
    for kid, ks in md["keyslots"].items():
        where = f"keyslots.{kid}"
        if _get(ks, "type", str, where) != "luks2":
            continue  # e.g. reencrypt keyslots: not ours to open
        af = _get(ks, "af", dict, where)
        area = _get(ks, "area", dict, where)
        if _get(af, "type", str, f"{where}.af") != "luks1":
            raise BadImageError(f"{where}.af.type: unsupported")
        stripes = _get(af, "stripes", int, f"{where}.af")
        if stripes != AF_STRIPES:
            raise BadImageError(f"{where}.af.stripes: {stripes} (only {AF_STRIPES} is valid)")
        af_hash = _get(af, "hash", str, f"{where}.af")
        if af_hash not in HASHES:
            raise BadImageError(f"{where}.af.hash: unsupported hash {af_hash!r}")
        key_size = _get(ks, "key_size", int, where)
        if not 1 <= key_size <= 512:
            raise BadImageError(f"{where}.key_size: {key_size} out of range")
        a_off = _u64(area, "offset", f"{where}.area")
        a_size = _u64(area, "size", f"{where}.area")
        if a_off < area_lo or a_off + a_size > area_hi or a_size < key_size * stripes:
            raise BadImageError(f"{where}.area: outside the keyslots area or too small")
        kdf, salt = Kdf.from_json(_get(ks, "kdf", dict, where), f"{where}.kdf")
        prio = ks.get("priority", 1)
        keyslots[kid] = Keyslot(id=kid, key_size=key_size, area_offset=a_off, area_size=a_size,
                                area_cipher=_get(area, "encryption", str, f"{where}.area"),
                                area_key_size=_get(area, "key_size", int, f"{where}.area"),
                                kdf=kdf, salt=salt, af_hash=af_hash, stripes=stripes,
                                priority=prio if isinstance(prio, int) else 1)
    digests: dict[str, Digest] = {}
    for did, dg in md["digests"].items():
        where = f"digests.{did}"
        if _get(dg, "type", str, where) != "pbkdf2":
            raise BadImageError(f"{where}.type: unsupported digest type")
        h = _get(dg, "hash", str, where)
        if h not in HASHES:
            raise BadImageError(f"{where}.hash: unsupported hash {h!r}")
        digests[did] = Digest(
            id=did, keyslots=tuple(_get(dg, "keyslots", list, where)),
            segments=tuple(_get(dg, "segments", list, where)), hash=h,
            iterations=_get(dg, "iterations", int, where),
            salt=_unb64(_get(dg, "salt", str, where), f"{where}.salt"),
            digest=_unb64(_get(dg, "digest", str, where), f"{where}.digest"))
    crypt = [(sid, s) for sid, s in sorted(md["segments"].items(), key=lambda kv: int(kv[0]))
             if isinstance(s, dict) and s.get("type") == "crypt"]
    if not crypt:
        raise BadImageError("LUKS2 metadata: no crypt segment")
    if len(md["segments"]) != 1:
        raise BadImageError("LUKS2 metadata: several segments (a reencryption in progress?)")
    sid, seg = crypt[0]
    where = f"segments.{sid}"
    size_s = _get(seg, "size", str, where)
    sector = _get(seg, "sector_size", int, where)
    if sector not in SECTOR_SIZES:
        raise BadImageError(f"{where}.sector_size: {sector} is not valid")
    data_offset = _u64(seg, "offset", where)
    if data_offset < area_hi or data_offset % 512:
        raise BadImageError(f"{where}.offset: inside the header or misaligned")
    for tid, tok in md["tokens"].items():
        check_token(tok, list(md["keyslots"]), f"tokens.{tid}")
    return Luks2Header(
        offset=offset, hdr_size=hdr_size, seqid=fields[3], label=_cstr(fields[4]),
        subsystem=_cstr(fields[8]), uuid=_cstr(fields[7]), used_copy=name, metadata=md,
        keyslots=keyslots, digests=digests, cipher=_get(seg, "encryption", str, where),
        sector_size=sector, data_offset=data_offset,
        data_size=None if size_s == "dynamic" else _u64(seg, "size", where),
        iv_tweak=_u64(seg, "iv_tweak", where), warnings=warnings)


def open_header(path: str | os.PathLike[str], offset: int = 0) -> Luks2Header:
    try:
        with open(path, "rb") as f:
            return read_header(f, offset)
    except FileNotFoundError:
        raise UserInputError(f"{path}: not found") from None
    except BadImageError as e:
        raise BadImageError(f"{path}: {e.message}") from None


def unlock_keyslot(f: BinaryIO, header: Luks2Header, slot: Keyslot, secret: bytes) -> bytes | None:
    """The volume key if ``secret`` opens ``slot``, else None."""
    if slot.area_cipher not in CIPHERS or slot.area_key_size not in CIPHERS[slot.area_cipher]:
        raise BadImageError(f"keyslots.{slot.id}: unsupported keyslot cipher {slot.area_cipher!r}")
    n = slot.key_size * slot.stripes
    f.seek(header.offset + slot.area_offset)
    enc = f.read(_pad(n, 512))
    if len(enc) < _pad(n, 512):
        raise BadImageError(f"keyslots.{slot.id}: area truncated")
    key = slot.kdf.derive(secret, slot.salt, slot.area_key_size)
    material = SectorCipher(key, slot.area_cipher, 512).decrypt(enc, 0)
    candidate = af_merge(material, slot.key_size, slot.stripes, slot.af_hash)
    for d in header.digests.values():
        if slot.id in d.keyslots and d.matches(candidate):
            return candidate
    return None


def unlock(f: BinaryIO, header: Luks2Header, secret: bytes, *, keyslot: str | None = None) -> bytes:
    """The volume key opened with ``secret`` (a passphrase or key file content).

    Keyslots with priority 0 ("ignore") are tried only when named. Raises WrongKeyError.
    """
    if keyslot is not None:
        if keyslot not in header.keyslots:
            raise UserInputError(f"keyslot {keyslot} does not exist")
        order = [header.keyslots[keyslot]]
    else:
        order = sorted((s for s in header.keyslots.values() if s.priority != 0),
                       key=lambda s: (-s.priority, int(s.id)))
    for slot in order:
        vk = unlock_keyslot(f, header, slot, secret)
        if vk is not None:
            log.debug("keyslot %s opened", slot.id)
            return vk
    raise WrongKeyError("no keyslot opens with this passphrase or key file")


def check_volume_key(header: Luks2Header, volume_key: bytes) -> bool:
    return any("0" in d.segments and d.matches(volume_key) for d in header.digests.values())


def decrypt_image(container: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                  secret: bytes | None = None, volume_key: bytes | None = None,
                  offset: int = 0, size: int | None = None, force: bool = False,
                  progress: ProgressFn | None = None) -> Luks2Header:
    """Decrypt a container's payload to the file ``dest``.

    The payload size is the segment size, or for a "dynamic" segment ``size`` if given,
    else everything from the data offset to the end of the file.
    """
    with open(container, "rb") as f:
        try:
            header = read_header(f, offset)
        except BadImageError as e:
            raise BadImageError(f"{container}: {e.message}") from None
        if header.cipher not in CIPHERS:
            raise BadImageError(f"{container}: data cipher {header.cipher!r} is not supported "
                                f"(supported: {', '.join(CIPHERS)})")
        if volume_key is None:
            if secret is None:
                raise ValueError("need a secret or a volume key")
            volume_key = unlock(f, header, secret)
        elif not check_volume_key(header, volume_key):
            raise WrongKeyError("the volume key does not match the container's digest")
        total = os.fstat(f.fileno()).st_size - offset - header.data_offset
        n = header.data_size if header.data_size is not None else (size if size is not None else total)
        if n > total or n % header.sector_size:
            raise BadImageError(f"{container}: payload of {n} bytes does not fit the container "
                                f"or is not whole {header.sector_size}-byte sectors")
        cipher = SectorCipher(volume_key, header.cipher, header.sector_size, header.iv_tweak)
        with atomic_output(dest, force=force, mode=0o600) as (_tmp, out):  # plaintext
            decrypt_stream(f.fileno(), offset + header.data_offset, n, out.fileno(), cipher,
                           progress=progress)
    return header
