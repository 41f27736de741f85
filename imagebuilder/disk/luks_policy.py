"""The ``luks:`` and ``fips:`` sections of an image definition: validation and defaults.

:func:`validate_security` is a pure function over the two sections (as loaded from YAML)
that returns typed settings or raises :class:`InvalidConfigError` whose message starts
with the path of the bad value (``luks.pbkdf: ...``). Secret files are read once here to
check them, but their content is not kept: :meth:`LuksSettings.keyslots` reads them again
when the container is written, and :meth:`LuksSettings.fingerprints` gives the values a
manifest or cache key may hold.

Key sources (at least one):

* ``passphrase_file``: typed at the console at boot; one trailing newline stripped.
* ``keyfile``: used byte for byte. It unlocks at boot only when embedded in the initramfs,
  which needs ``insecure_keyfile_in_initramfs: true`` (tests, CI; warned); otherwise it
  is an extra keyslot next to a passphrase or the TPM2.
* ``tpm2: true``: the first boot binds the volume to the TPM2 (``tpm2_pcrs``, default
  ``[7]``) and then drops the build-time keyslot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..secrets import SecretFileError, read_keyfile, read_passphrase_file, secret_fingerprint
from . import fips as fipsrules
from .luks2 import CIPHERS, LABEL_MAX, Entropy, Kdf, KeySlotSpec, Luks2Params

PBKDFS = ("pbkdf2", "argon2id")
DEFAULT_LABEL = "luks-root"
DEFAULT_TPM2_PCRS = (7,)
SEED_WARNING = ("luks.reproducible_seed: test-only: salts and the volume key are derived from "
                "the seed, so whoever knows it can decrypt the image")
KEYFILE_WARNING = ("luks.insecure_keyfile_in_initramfs: the key file is embedded in the initramfs "
                   "on the unencrypted boot partition; anyone with the disk can unlock root "
                   "(tests and CI only)")

LUKS_KEYS = ("passphrase_file", "keyfile", "insecure_keyfile_in_initramfs", "tpm2", "tpm2_pcrs",
             "cipher", "key_size", "pbkdf", "label", "reproducible_seed")


@dataclass(frozen=True)
class LuksSettings:
    passphrase_file: Path | None = None
    keyfile: Path | None = None
    insecure_keyfile_in_initramfs: bool = False
    tpm2: bool = False
    tpm2_pcrs: tuple[int, ...] = DEFAULT_TPM2_PCRS
    cipher: str = "aes-xts-plain64"
    key_size: int = 512
    pbkdf: str = "argon2id"
    label: str = DEFAULT_LABEL
    reproducible_seed: str | None = None

    @property
    def key_sources(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("passphrase", self.passphrase_file is not None),
                                           ("keyfile", self.keyfile is not None),
                                           ("tpm2", self.tpm2)) if on)

    def kdf(self) -> Kdf:
        return Kdf.pbkdf2(fipsrules.FIPS.default_hash) if self.pbkdf == "pbkdf2" else Kdf.argon2(self.pbkdf)

    def luks2_params(self, *, uuid: str | None = None) -> Luks2Params:
        return Luks2Params(cipher=self.cipher, key_size=self.key_size, kdf=self.kdf(),
                           label=self.label, uuid=uuid)

    def entropy(self) -> Entropy:
        return Entropy(self.reproducible_seed.encode() if self.reproducible_seed is not None else None)

    def keyslots(self) -> list[KeySlotSpec]:
        """The secrets to enroll at build time, read now: passphrase first, then key file."""
        out = []
        if self.passphrase_file is not None:
            out.append(KeySlotSpec(read_passphrase_file(self.passphrase_file)))
        if self.keyfile is not None:
            out.append(KeySlotSpec(read_keyfile(self.keyfile)))
        return out

    def fingerprints(self) -> dict[str, str]:
        """Slow salted hashes of the secret files (for cache keys); never the secrets."""
        out = {}
        if self.passphrase_file is not None:
            out["passphrase_file"] = secret_fingerprint(read_passphrase_file(self.passphrase_file))
        if self.keyfile is not None:
            out["keyfile"] = secret_fingerprint(read_keyfile(self.keyfile))
        return out

    def summary(self) -> dict[str, Any]:
        """The public facts (meta.json): algorithms, label, key source kinds; no paths, no keys."""
        return {"cipher": self.cipher, "key_size": self.key_size, "pbkdf": self.pbkdf,
                "label": self.label, "key_sources": list(self.key_sources),
                **({"tpm2_pcrs": list(self.tpm2_pcrs)} if self.tpm2 else {}),
                "reproducible": self.reproducible_seed is not None}


@dataclass(frozen=True)
class SecuritySettings:
    luks: LuksSettings | None = None
    fips: bool = False
    warnings: tuple[str, ...] = ()


def _fail(path: str, msg: str, hint: str | None = None) -> None:
    raise InvalidConfigError(f"{path}: {msg}", hint=hint)


def _unknown_key(path: str, key: Any, choices: tuple[str, ...]) -> None:
    from ..pipeline.definition import did_you_mean  # late: the definition loader imports us

    _fail(path, "unknown key", did_you_mean(str(key), choices))


def _bool(data: Mapping[str, Any], key: str, path: str, default: bool = False) -> bool:
    v = data.get(key, default)
    if not isinstance(v, bool):
        _fail(path, f"expected true or false, got {v!r}")
    return v


def _str(data: Mapping[str, Any], key: str, path: str) -> str | None:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        _fail(path, f"expected a non-empty string, got {v!r}")
    return v


def _path(data: Mapping[str, Any], key: str, path: str, base_dir: Path) -> Path | None:
    v = _str(data, key, path)
    if v is None:
        return None
    p = Path(v).expanduser()
    return p if p.is_absolute() else base_dir / p


def validate_security(section: Mapping[str, Any], *, base_dir: Path) -> SecuritySettings:
    """Validate ``{"luks": ..., "fips": ...}`` (either may be absent) from a definition."""
    fips = section.get("fips", False)
    if fips is None:
        fips = False
    if not isinstance(fips, bool):
        _fail("fips", f"expected true or false, got {fips!r}")
    luks = section.get("luks")
    if luks is None:
        return SecuritySettings(luks=None, fips=fips)
    if not isinstance(luks, Mapping):
        _fail("luks", f"expected a mapping, got {type(luks).__name__}")
    for key in luks:
        if key not in LUKS_KEYS:
            _unknown_key(f"luks.{key}", key, LUKS_KEYS)
    warnings: list[str] = []

    passphrase_file = _path(luks, "passphrase_file", "luks.passphrase_file", base_dir)
    keyfile = _path(luks, "keyfile", "luks.keyfile", base_dir)
    insecure = _bool(luks, "insecure_keyfile_in_initramfs", "luks.insecure_keyfile_in_initramfs")
    tpm2 = _bool(luks, "tpm2", "luks.tpm2")
    for key, p, reader in (("passphrase_file", passphrase_file, read_passphrase_file),
                           ("keyfile", keyfile, read_keyfile)):
        if p is not None:
            try:
                reader(p)
            except SecretFileError as e:
                _fail(f"luks.{key}", str(e))
    if passphrase_file is None and keyfile is None and not tpm2:
        _fail("luks", "no key source", "set passphrase_file, keyfile or tpm2: true")
    if insecure and keyfile is None:
        _fail("luks.insecure_keyfile_in_initramfs", "needs luks.keyfile")
    if keyfile is not None and not insecure and passphrase_file is None and not tpm2:
        _fail("luks.keyfile", "a key file alone unlocks root at boot only from inside the "
              "initramfs", "set insecure_keyfile_in_initramfs: true (tests, CI), or add "
              "passphrase_file or tpm2: true")
    if insecure:
        warnings.append(KEYFILE_WARNING)

    pcrs_raw = luks.get("tpm2_pcrs")
    pcrs = DEFAULT_TPM2_PCRS
    if pcrs_raw is not None:
        if not tpm2:
            _fail("luks.tpm2_pcrs", "only valid with tpm2: true")
        if not isinstance(pcrs_raw, list) or not pcrs_raw:
            _fail("luks.tpm2_pcrs", f"expected a non-empty list of PCR numbers, got {pcrs_raw!r}")
        for i, p in enumerate(pcrs_raw):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 23:
                _fail(f"luks.tpm2_pcrs[{i}]", f"{p!r} is not a PCR number (0..23)")
        if len(set(pcrs_raw)) != len(pcrs_raw):
            _fail("luks.tpm2_pcrs", "lists a PCR twice")
        pcrs = tuple(sorted(pcrs_raw))

    cipher = _str(luks, "cipher", "luks.cipher") or "aes-xts-plain64"
    if cipher not in CIPHERS:
        _fail("luks.cipher", f"{cipher!r} is not supported", "supported: " + ", ".join(CIPHERS))
    key_size = luks.get("key_size", 512)
    sizes = tuple(8 * b for b in CIPHERS[cipher])
    if isinstance(key_size, bool) or not isinstance(key_size, int) or key_size not in sizes:
        _fail("luks.key_size", f"{key_size!r} bits does not fit {cipher}",
              "use " + " or ".join(str(s) for s in sizes))
    pbkdf = _str(luks, "pbkdf", "luks.pbkdf") or ("pbkdf2" if fips else "argon2id")
    if pbkdf not in PBKDFS:
        _fail("luks.pbkdf", f"{pbkdf!r} is not one of {', '.join(PBKDFS)}")
    if fips:
        for key, reason in fipsrules.violations(cipher=cipher, key_size=key_size, pbkdf=pbkdf):
            _fail(f"luks.{key}", f"{luks.get(key, '(default)')} with fips: true: {reason}",
                  "use pbkdf: pbkdf2" if key == "pbkdf" else None)

    label = _str(luks, "label", "luks.label") or DEFAULT_LABEL
    if len(label.encode()) > LABEL_MAX or any(ord(c) < 32 for c in label):
        _fail("luks.label", f"{label!r}: at most {LABEL_MAX} bytes, no control characters")
    seed = _str(luks, "reproducible_seed", "luks.reproducible_seed")
    if seed is not None:
        warnings.append(SEED_WARNING)

    settings = LuksSettings(passphrase_file=passphrase_file, keyfile=keyfile,
                            insecure_keyfile_in_initramfs=insecure, tpm2=tpm2, tpm2_pcrs=pcrs,
                            cipher=cipher, key_size=key_size, pbkdf=pbkdf, label=label,
                            reproducible_seed=seed)
    settings.luks2_params().check()
    return SecuritySettings(luks=settings, fips=fips, warnings=tuple(warnings))

