"""The FIPS 140 rule table for what an image build chooses, as data plus checks.

With ``fips: true`` every algorithm the build picks for LUKS must be one a FIPS-mode
system accepts: AES-XTS (SP 800-38E: XTS-AES-128 and XTS-AES-256, i.e. 256- and
512-bit LUKS keys), PBKDF2 (SP 800-132) with HMAC-SHA-2, SHA-2 digests and checksums.
Argon2 is not approved: cryptsetup in FIPS mode refuses it ("Only PBKDF2 is supported in
FIPS mode."), so a volume made with Argon2 cannot be opened there. In FIPS mode the kernel's
``xts(aes)`` also refuses a key whose two halves are equal.

The checks return ``(key, reason)`` pairs, the key being the definition key (or the
cryptsetup option) at fault, so callers can report the path of the bad value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ARGON2_REASON = "a volume made with Argon2 cannot be opened in FIPS mode"


@dataclass(frozen=True)
class FipsRules:
    # cipher -> approved key sizes in bits
    ciphers: Mapping[str, frozenset[int]] = field(default_factory=lambda: {
        "aes-xts-plain64": frozenset({256, 512})})
    pbkdfs: frozenset[str] = frozenset({"pbkdf2"})
    hashes: frozenset[str] = frozenset({"sha256", "sha384", "sha512"})
    default_pbkdf: str = "pbkdf2"
    default_cipher: str = "aes-xts-plain64"
    default_key_size: int = 512
    default_hash: str = "sha256"
    min_pbkdf2_iterations: int = 1000
    min_salt_bytes: int = 16


FIPS = FipsRules()


def pbkdf_reason(pbkdf: str) -> str | None:
    if pbkdf in FIPS.pbkdfs:
        return None
    if pbkdf.startswith("argon2"):
        return ARGON2_REASON
    return f"{pbkdf} is not a FIPS-approved key derivation (approved: {', '.join(sorted(FIPS.pbkdfs))})"


def violations(*, cipher: str | None = None, key_size: int | None = None,
               pbkdf: str | None = None, hashes: Mapping[str, str] | None = None,
               ) -> list[tuple[str, str]]:
    """``(key, reason)`` for every choice that is not FIPS-approved (empty: all approved).

    ``hashes`` maps a key name (e.g. ``pbkdf_hash``, ``af_hash``) to a hash name.
    """
    out: list[tuple[str, str]] = []
    if cipher is not None and cipher not in FIPS.ciphers:
        out.append(("cipher", f"{cipher} is not FIPS-approved "
                              f"(approved: {', '.join(sorted(FIPS.ciphers))})"))
    elif cipher is not None and key_size is not None and key_size not in FIPS.ciphers[cipher]:
        sizes = ", ".join(str(s) for s in sorted(FIPS.ciphers[cipher]))
        out.append(("key_size", f"a {key_size}-bit {cipher} key is not FIPS-approved "
                                f"(approved: {sizes})"))
    if pbkdf is not None and (reason := pbkdf_reason(pbkdf)):
        out.append(("pbkdf", reason))
    for key, h in (hashes or {}).items():
        if h not in FIPS.hashes:
            out.append((key, f"{h} is not FIPS-approved here (approved: {', '.join(sorted(FIPS.hashes))})"))
    return out


def header_violations(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """FIPS problems of an existing LUKS2 volume, from ``Luks2Header.summary()``.

    Keys name the header object at fault (``keyslots.1.kdf``, ``cipher``).
    """
    out = [(k, r) for k, r in violations(cipher=summary.get("cipher"),
                                         key_size=summary.get("key_size"))]
    for kid, ks in (summary.get("keyslots") or {}).items():
        if (reason := pbkdf_reason(str(ks.get("kdf")))):
            out.append((f"keyslots.{kid}.kdf", reason))
        elif ks.get("hash") and ks["hash"] not in FIPS.hashes:
            out.append((f"keyslots.{kid}.hash", f"{ks['hash']} is not FIPS-approved here"))
    return out


# cryptsetup luksFormat options that choose an algorithm -> the rule they fall under
_ALGORITHM_OPTIONS = {"--cipher": "cipher", "-c": "cipher", "--key-size": "key_size",
                      "-s": "key_size", "--hash": "hash", "-h": "hash", "--pbkdf": "pbkdf"}


def luksformat_option_violations(options: Sequence[str]) -> list[tuple[str, str]]:
    """FIPS problems of extra ``cryptsetup luksFormat`` options (Ignition ``luks.options``).

    Only explicit choices are judged: with no ``--pbkdf`` cryptsetup picks its default,
    which is PBKDF2 only when cryptsetup itself runs in FIPS mode. Keys are the options.
    """
    chosen: dict[str, tuple[str, str]] = {}  # rule -> (option as written, value)
    it = iter(options)
    for opt in it:
        name, sep, value = opt.partition("=") if opt.startswith("--") else (opt, "", "")
        rule = _ALGORITHM_OPTIONS.get(name)
        if rule is None:
            continue
        if not sep:
            value = next(it, "")
        chosen[rule] = (name, value)
    key_size = chosen.get("key_size", ("", ""))[1]
    found = violations(cipher=chosen["cipher"][1] if "cipher" in chosen else FIPS.default_cipher,
                       key_size=int(key_size) if key_size.isdigit() else None,
                       pbkdf=chosen["pbkdf"][1] if "pbkdf" in chosen else None,
                       hashes={"hash": chosen["hash"][1]} if "hash" in chosen else None)
    return [(chosen[k][0] if k in chosen else k, r) for k, r in found]


def xts_key_ok(volume_key: bytes) -> bool:
    """False when the two XTS halves are equal (the kernel refuses such a key in FIPS mode)."""
    half = len(volume_key) // 2
    return volume_key[:half] != volume_key[half:]
