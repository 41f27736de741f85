"""The luks:/fips: definition sections, the FIPS rule table and the secret-file rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imagebuilder.disk import fips
from imagebuilder.disk.luks_policy import (KEYFILE_WARNING, SEED_WARNING, LuksSettings,
                                           validate_security)
from imagebuilder.errors import InvalidConfigError
from imagebuilder.secrets import (SecretFileError, read_keyfile, read_passphrase_file,
                                  secret_fingerprint, secret_tempfile)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/root.pass").write_bytes(b"hunter2 hunter2\n")
    (tmp_path / "secrets/root.key").write_bytes(os.urandom(512))
    return tmp_path


def v(base: Path, luks=None, **top):
    section = dict(top)
    if luks is not None:
        section["luks"] = luks
    return validate_security(section, base_dir=base)


def err(base: Path, luks=None, **top) -> str:
    with pytest.raises(InvalidConfigError) as e:
        v(base, luks, **top)
    return e.value.message


# --------------------------------------------------------------------------- defaults


def test_absent_sections(base):
    s = v(base)
    assert s.luks is None and s.fips is False and s.warnings == ()
    assert v(base, fips=True).fips is True  # fips without luks is valid


def test_defaults_without_fips(base):
    s = v(base, {"passphrase_file": "secrets/root.pass"})
    L = s.luks
    assert (L.cipher, L.key_size, L.pbkdf, L.label) == ("aes-xts-plain64", 512, "argon2id", "luks-root")
    assert L.passphrase_file == base / "secrets/root.pass"
    assert L.key_sources == ("passphrase",)
    p = L.luks2_params()
    assert p.kdf.type == "argon2id" and p.key_size == 512 and p.label == "luks-root"
    assert [k.secret for k in L.keyslots()] == [b"hunter2 hunter2"]


def test_fips_defaults_to_pbkdf2(base):
    s = v(base, {"passphrase_file": "secrets/root.pass"}, fips=True)
    assert s.luks.pbkdf == "pbkdf2" and s.fips
    kdf = s.luks.luks2_params().kdf
    assert kdf.type == "pbkdf2" and kdf.hash == "sha256" and kdf.iterations >= 1000
    assert fips.violations(cipher="aes-xts-plain64", key_size=512, pbkdf=kdf.type,
                           hashes={"hash": kdf.hash}) == []


def test_full_section(base):
    s = v(base, {"passphrase_file": "secrets/root.pass", "keyfile": "secrets/root.key",
                 "tpm2": True, "tpm2_pcrs": [7, 0], "cipher": "aes-xts-plain64",
                 "key_size": 256, "pbkdf": "pbkdf2", "label": "data",
                 "reproducible_seed": "ci"})
    L = s.luks
    assert L.key_sources == ("passphrase", "keyfile", "tpm2") and L.tpm2_pcrs == (0, 7)
    assert L.key_size == 256 and L.label == "data" and s.warnings == (SEED_WARNING,)
    assert L.entropy().deterministic and L.entropy().uuid() == L.entropy().uuid()
    assert L.summary() == {"cipher": "aes-xts-plain64", "key_size": 256, "pbkdf": "pbkdf2",
                           "label": "data", "key_sources": ["passphrase", "keyfile", "tpm2"],
                           "tpm2_pcrs": [0, 7], "reproducible": True}
    fp = L.fingerprints()
    assert set(fp) == {"passphrase_file", "keyfile"}
    assert "hunter2" not in str(fp) and fp == L.fingerprints()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("luks, want", [
    ({}, "luks: no key source"),
    ({"tpm2": False}, "luks: no key source"),
    ({"passphrase_file": "secrets/missing"}, "luks.passphrase_file: {base}/secrets/missing: passphrase file not found"),
    ({"passphrase_file": "secrets"}, "luks.passphrase_file: {base}/secrets: is a directory"),
    ({"keyfile": "secrets/none", "insecure_keyfile_in_initramfs": True}, "luks.keyfile: {base}/secrets/none: key file not found"),
    ({"keyfile": "secrets/root.key"}, "luks.keyfile: a key file alone unlocks root at boot only from inside the initramfs"),
    ({"tpm2": True, "insecure_keyfile_in_initramfs": True}, "luks.insecure_keyfile_in_initramfs: needs luks.keyfile"),
    ({"passphrase_file": "secrets/root.pass", "tpm2_pcrs": [7]}, "luks.tpm2_pcrs: only valid with tpm2: true"),
    ({"tpm2": True, "tpm2_pcrs": []}, "luks.tpm2_pcrs: expected a non-empty list"),
    ({"tpm2": True, "tpm2_pcrs": [7, 24]}, "luks.tpm2_pcrs[1]: 24 is not a PCR number (0..23)"),
    ({"tpm2": True, "tpm2_pcrs": [7, 7]}, "luks.tpm2_pcrs: lists a PCR twice"),
    ({"tpm2": "yes"}, "luks.tpm2: expected true or false, got 'yes'"),
    ({"tpm2": True, "cipher": "aes-cbc-essiv:sha256"}, "luks.cipher: 'aes-cbc-essiv:sha256' is not supported"),
    ({"tpm2": True, "key_size": 384}, "luks.key_size: 384 bits does not fit aes-xts-plain64"),
    ({"tpm2": True, "key_size": "512"}, "luks.key_size: '512' bits does not fit"),
    ({"tpm2": True, "pbkdf": "scrypt"}, "luks.pbkdf: 'scrypt' is not one of pbkdf2, argon2id"),
    ({"tpm2": True, "label": "x" * 48}, "luks.label: "),
    ({"tpm2": True, "label": "a\nb"}, "luks.label: "),
    ({"tpm2": True, "reproducible_seed": ""}, "luks.reproducible_seed: expected a non-empty string"),
    ({"tpm2": True, "passphrase": "x"}, "luks.passphrase: unknown key"),
])
def test_errors_name_the_key(base, luks, want):
    assert err(base, luks).startswith(want.format(base=base))


def test_unknown_key_hint(base):
    with pytest.raises(InvalidConfigError) as e:
        v(base, {"tpm2": True, "pbkfd": "pbkdf2"})
    assert e.value.message == "luks.pbkfd: unknown key" and e.value.hint == "did you mean 'pbkdf'?"


def test_argon2_with_fips_is_refused_with_the_reason(base):
    msg = err(base, {"passphrase_file": "secrets/root.pass", "pbkdf": "argon2id"}, fips=True)
    assert msg == ("luks.pbkdf: argon2id with fips: true: "
                   "a volume made with Argon2 cannot be opened in FIPS mode")


def test_fips_must_be_a_bool_and_luks_a_mapping(base):
    assert err(base, fips="yes").startswith("fips: expected true or false")
    assert err(base, ["x"]).startswith("luks: expected a mapping")


def test_keyfile_in_initramfs_is_warned(base):
    s = v(base, {"keyfile": "secrets/root.key", "insecure_keyfile_in_initramfs": True})
    assert s.warnings == (KEYFILE_WARNING,)
    assert s.luks.key_sources == ("keyfile",)
    # with another boot-time source the key file is just an extra keyslot
    assert v(base, {"keyfile": "secrets/root.key", "tpm2": True}).warnings == ()


def test_tpm2_only_defaults_to_pcr7(base):
    assert v(base, {"tpm2": True}).luks.tpm2_pcrs == (7,)


def test_secret_content_never_in_errors(base):
    (base / "secrets/bad.pass").write_bytes(b"s3cr3t-value\nsecond line\n")
    msg = err(base, {"passphrase_file": "secrets/bad.pass"})
    assert "s3cr3t" not in msg and "contains a newline" in msg


# --------------------------------------------------------------------------- secret files


@pytest.mark.parametrize("content, want", [
    (b"pw\n", b"pw"), (b"pw", b"pw"), (b"pw\r\n", b"pw"), (b"pw\n\n", None), (b"\n", None),
    (b"", None), (b"  spaced  \n", b"  spaced  "), (b"a\0b", None), ("pässwörd\n".encode(), "pässwörd".encode()),
    (b"x" * 512 + b"\n", b"x" * 512), (b"x" * 513, None),
])
def test_passphrase_file_rules(tmp_path, content, want):
    p = tmp_path / "p"
    p.write_bytes(content)
    if want is None:
        with pytest.raises(SecretFileError):
            read_passphrase_file(p)
    else:
        assert read_passphrase_file(p) == want


def test_unreadable_passphrase_file(tmp_path):
    (tmp_path / "f").write_bytes(b"pw")
    with pytest.raises(SecretFileError, match="cannot read the passphrase file: Not a directory"):
        read_passphrase_file(tmp_path / "f" / "p")  # unreadable for root too


def test_keyfile_is_taken_verbatim(tmp_path):
    p = tmp_path / "k"
    p.write_bytes(b"key\n")
    assert read_keyfile(p) == b"key\n"
    p.write_bytes(b"")
    with pytest.raises(SecretFileError, match="key file is empty"):
        read_keyfile(p)


def test_secret_tempfile_is_private_and_removed(tmp_path):
    with secret_tempfile(b"top secret", dir=tmp_path) as p:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_bytes() == b"top secret"
    assert not p.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with secret_tempfile(b"x", dir=tmp_path) as p2:
            raise RuntimeError
    assert not p2.exists()


def test_fingerprint_changes_with_the_secret():
    assert secret_fingerprint(b"a") == secret_fingerprint(b"a") != secret_fingerprint(b"b")
    assert secret_fingerprint(b"a").startswith("pbkdf2-sha256:")


# --------------------------------------------------------------------------- FIPS table


def test_fips_rule_table():
    assert fips.violations(cipher="aes-xts-plain64", key_size=512, pbkdf="pbkdf2",
                           hashes={"pbkdf_hash": "sha512", "digest_hash": "sha256"}) == []
    assert fips.violations(cipher="aes-xts-plain64", key_size=256) == []
    assert fips.violations(pbkdf="argon2id") == [("pbkdf", fips.ARGON2_REASON)]
    assert fips.violations(pbkdf="argon2i") == [("pbkdf", fips.ARGON2_REASON)]
    assert fips.violations(cipher="serpent-xts-plain64")[0][0] == "cipher"
    assert fips.violations(cipher="aes-xts-plain64", key_size=128)[0][0] == "key_size"
    assert fips.violations(hashes={"af_hash": "sha1"}) == [
        ("af_hash", "sha1 is not FIPS-approved here (approved: sha256, sha384, sha512)")]
    assert fips.ARGON2_REASON == "a volume made with Argon2 cannot be opened in FIPS mode"
    assert fips.xts_key_ok(bytes(range(64))) and not fips.xts_key_ok(bytes(32) * 2)


def test_fips_header_and_luksformat_options():
    summary = {"cipher": "aes-xts-plain64", "key_size": 512,
               "keyslots": {"0": {"kdf": "pbkdf2", "hash": "sha256"}, "1": {"kdf": "argon2id"}}}
    assert fips.header_violations(summary) == [("keyslots.1.kdf", fips.ARGON2_REASON)]
    assert fips.luksformat_option_violations(["--pbkdf", "argon2id", "--label=x"]) == [
        ("--pbkdf", fips.ARGON2_REASON)]
    assert fips.luksformat_option_violations(["--pbkdf=pbkdf2", "-h", "sha512", "-s", "512"]) == []
    found = dict(fips.luksformat_option_violations(["-c", "twofish-xts-plain64", "--hash=sha1"]))
    assert set(found) == {"-c", "--hash"}
    assert dict(fips.luksformat_option_violations(["--key-size", "128"]))["--key-size"]


def test_settings_are_frozen_and_hold_no_secret(base):
    s = v(base, {"passphrase_file": "secrets/root.pass"}).luks
    assert isinstance(s, LuksSettings)
    assert "hunter2" not in repr(s)
    with pytest.raises(AttributeError):
        s.cipher = "x"  # type: ignore[misc]
