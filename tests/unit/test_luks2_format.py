"""LUKS2 writer/reader in pure Python: AF split/merge, sector cipher IVs, header copies and
checksums, keyslots (PBKDF2 and Argon2id), tokens, deterministic mode, sparse streaming,
and that no secret reaches a log record or a repr. The cross-checks with the real
cryptsetup are in tests/integration/test_luks2_cryptsetup.py."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from imagebuilder.disk import luks2 as L
from imagebuilder.errors import BadImageError, InvalidConfigError, UserInputError

MiB = 1 << 20
PASS = b"correct horse battery staple"
FAST = L.Kdf.pbkdf2(iterations=1000)
FAST_PARAMS = L.Luks2Params(kdf=FAST, digest_iterations=1000, label="luks-root")


def _image(path: Path, size: int = 2 * MiB, seed: int = 1) -> Path:
    path.write_bytes(hashlib.shake_256(seed.to_bytes(4, "big")).digest(size))
    return path


def _container(tmp_path: Path, params: L.Luks2Params = FAST_PARAMS, keys=(PASS,), **kw) -> Path:
    src = _image(tmp_path / "src.img")
    out = tmp_path / "c.luks"
    L.encrypt_image(src, out, params=params, keys=list(keys), **kw)
    return out


# --------------------------------------------------------------------------- AF and ciphers


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("key_len", [32, 64, 33])
def test_af_split_merge_round_trip(hash_name, key_len):
    key = os.urandom(key_len)
    rand = os.urandom(key_len * 9)
    material = L.af_split(key, 10, hash_name, rand)
    assert len(material) == key_len * 10
    assert material[:key_len * 9] == rand  # the first stripes are the random ones
    assert L.af_merge(material, key_len, 10, hash_name) == key
    damaged = bytearray(material)
    damaged[3] ^= 1
    assert L.af_merge(bytes(damaged), key_len, 10, hash_name) != key


def test_diffuse_matches_the_luks_definition():
    # 40 bytes with sha256 (32-byte digests): piece 0 = 32 bytes, piece 1 = the last 8
    block = bytes(range(40))
    want = (hashlib.sha256(b"\0\0\0\0" + block[:32]).digest()
            + hashlib.sha256(b"\0\0\0\1" + block[32:]).digest()[:8])
    assert L._diffuse(block, "sha256") == want


def test_sector_cipher_counts_iv_in_512_byte_units():
    key = bytes(range(64))
    data = os.urandom(3 * 4096)
    enc = L.SectorCipher(key, "aes-xts-plain64", 4096, iv_tweak=5).encrypt(data, 8192)
    # sector 2 of the segment (byte offset 8192) -> IV 5 + 8192/512 = 21, then 29, 37
    for i, iv in enumerate((21, 29, 37)):
        c = Cipher(algorithms.AES(key), modes.XTS(iv.to_bytes(16, "little"))).encryptor()
        assert enc[i * 4096:(i + 1) * 4096] == c.update(data[i * 4096:(i + 1) * 4096])
    assert L.SectorCipher(key, "aes-xts-plain64", 4096, 5).decrypt(enc, 8192) == data


def test_sector_cipher_rejects_bad_keys_and_partial_sectors():
    with pytest.raises(ValueError, match="512-bit"):
        L.SectorCipher(bytes(48), "aes-xts-plain64", 512)
    with pytest.raises(ValueError, match="unsupported cipher"):
        L.SectorCipher(bytes(64), "serpent-xts-plain64", 512)
    with pytest.raises(ValueError, match="whole sectors"):
        L.SectorCipher(bytes(range(64)), "aes-xts-plain64", 4096).encrypt(bytes(512), 0)


def test_kdf_argon2id_and_pbkdf2_derive_and_serialise():
    salt = bytes(32)
    pb = L.Kdf.pbkdf2("sha512", 1000)
    assert pb.derive(b"pw", salt, 64) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 1000, 64)
    ar = L.Kdf.argon2("argon2id", time=4, memory=1024, cpus=1)
    a1 = ar.derive(b"pw", salt, 64)
    assert len(a1) == 64 and a1 != ar.derive(b"pW", salt, 64)
    for kdf in (pb, ar):
        back, s = L.Kdf.from_json(kdf.to_json(salt), "kdf")
        assert back == kdf and s == salt
    with pytest.raises(ValueError, match="iterations"):
        L.Kdf.pbkdf2(iterations=999).check()
    with pytest.raises(ValueError, match="memory"):
        L.Kdf.argon2(memory=8).check()


# --------------------------------------------------------------------------- header


def test_header_layout_and_both_copies(tmp_path):
    c = _container(tmp_path)
    raw = c.read_bytes()
    assert raw[:6] == L.MAGIC_PRIMARY and raw[16384:16390] == L.MAGIC_SECONDARY
    h = L.open_header(c)
    assert h.used_copy == "primary" and h.warnings == ()
    assert (h.hdr_size, h.data_offset, h.sector_size, h.cipher) == (16384, 16 * MiB, 4096,
                                                                     "aes-xts-plain64")
    assert h.label == "luks-root" and h.seqid == 1
    md = h.metadata
    assert md["config"] == {"json_size": "12288", "keyslots_size": str(16 * MiB - 32768)}
    ks = md["keyslots"]["0"]
    assert ks["area"] == {"type": "raw", "offset": "32768", "size": "258048",
                          "encryption": "aes-xts-plain64", "key_size": 64}
    assert ks["af"] == {"type": "luks1", "stripes": 4000, "hash": "sha256"}
    # the two binary headers carry different salts and checksums over the same JSON
    assert raw[104:168] != raw[16384 + 104:16384 + 168]
    assert raw[4096:16384] == raw[16384 + 4096:32768]
    assert len(c.read_bytes()) == 16 * MiB + 2 * MiB


def test_round_trip_with_passphrase_and_keyfile(tmp_path):
    keyfile = os.urandom(4096)
    c = _container(tmp_path, keys=(PASS, L.KeySlotSpec(keyfile, kdf=L.Kdf.argon2(memory=1024, cpus=1))))
    for secret in (PASS, keyfile):
        out = tmp_path / f"out-{len(secret)}.img"
        L.decrypt_image(c, out, secret=secret)
        assert out.read_bytes() == (tmp_path / "src.img").read_bytes()


def test_wrong_passphrase_is_refused(tmp_path):
    c = _container(tmp_path)
    with open(c, "rb") as f:
        h = L.read_header(f)
        with pytest.raises(L.WrongKeyError):
            L.unlock(f, h, b"wrong")
        assert L.check_volume_key(h, L.unlock(f, h, PASS))
    with pytest.raises(L.WrongKeyError):
        L.decrypt_image(c, tmp_path / "x.img", secret=PASS + b"\n")
    assert not (tmp_path / "x.img").exists()


def test_priority_ignore_slots_are_only_tried_when_named(tmp_path):
    c = _container(tmp_path, keys=(L.KeySlotSpec(PASS, priority=0),))
    with open(c, "rb") as f:
        h = L.read_header(f)
        with pytest.raises(L.WrongKeyError):
            L.unlock(f, h, PASS)
        assert L.check_volume_key(h, L.unlock(f, h, PASS, keyslot="0"))


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_primary_checksum_uses_secondary_and_says_so(tmp_path):
    c = _container(tmp_path)
    _flip(c, 4096 + 5)  # inside the primary JSON area
    h = L.open_header(c)
    assert h.used_copy == "secondary"
    assert any("primary header (offset 0): checksum mismatch" in w for w in h.warnings)
    out = tmp_path / "out.img"
    L.decrypt_image(c, out, secret=PASS)
    assert out.read_bytes() == (tmp_path / "src.img").read_bytes()


def test_corrupt_secondary_is_reported(tmp_path):
    c = _container(tmp_path)
    _flip(c, 16384 + 200)  # secondary binary header, inside the salt
    h = L.open_header(c)
    assert h.used_copy == "primary"
    assert h.warnings == ("secondary header (offset 16384): checksum mismatch", "using the primary header")


def test_primary_magic_gone_finds_secondary_by_scanning(tmp_path):
    c = _container(tmp_path)
    with open(c, "r+b") as f:
        f.write(bytes(4096))
    h = L.open_header(c)
    assert h.used_copy == "secondary"
    assert h.warnings[0] == "primary header (offset 0): no LUKS2 magic"


def test_both_copies_bad_names_both(tmp_path):
    c = _container(tmp_path)
    _flip(c, 4096 + 5)
    _flip(c, 16384 + 4096 + 5)
    with pytest.raises(BadImageError, match=r"primary header \(offset 0\): checksum mismatch; "
                                            r"secondary header \(offset 16384\): checksum mismatch"):
        L.open_header(c)


def test_not_luks(tmp_path):
    p = tmp_path / "plain.img"
    p.write_bytes(bytes(64 * 1024))
    with pytest.raises(BadImageError, match="not a LUKS2 container"):
        L.open_header(p)
    with pytest.raises(UserInputError, match="not found"):
        L.open_header(tmp_path / "missing")


def test_newer_seqid_wins(tmp_path):
    c = _container(tmp_path)
    raw = bytearray(c.read_bytes())
    # rewrite the secondary with seqid 2 and a valid checksum
    hdr = bytearray(raw[16384:16384 + 4096])
    hdr[16:24] = (2).to_bytes(8, "big")
    hdr[448:512] = bytes(64)
    hdr[448:480] = hashlib.sha256(bytes(hdr) + bytes(raw[16384 + 4096:32768])).digest()
    raw[16384:16384 + 4096] = hdr
    c.write_bytes(bytes(raw))
    h = L.open_header(c)
    assert h.used_copy == "secondary" and h.seqid == 2
    assert "primary header has an older seqid (1 < 2); using the secondary header" in h.warnings


def test_malformed_metadata_is_a_bad_image(tmp_path):
    c = _container(tmp_path)
    raw = bytearray(c.read_bytes())
    md = json.loads(bytes(raw[4096:16384]).split(b"\0")[0])
    md["keyslots"]["0"]["area"]["offset"] = "1024"  # inside the metadata
    text = json.dumps(md).encode()
    for base in (0, 16384):
        area = text + bytes(12288 - len(text))
        raw[base + 4096:base + 16384] = area
        hdr = bytearray(raw[base:base + 4096])
        hdr[448:512] = bytes(64)
        hdr[448:480] = hashlib.sha256(bytes(hdr) + area).digest()
        raw[base:base + 4096] = hdr
    c.write_bytes(bytes(raw))
    with pytest.raises(BadImageError, match=r"keyslots\.0\.area: outside the keyslots area"):
        L.open_header(c)


def test_params_are_checked():
    for kw, msg in (({"cipher": "aes-cbc-essiv:sha256"}, "luks2 cipher"),
                    ({"key_size": 384}, "luks2 key_size"),
                    ({"sector_size": 8192}, "luks2 sector_size"),
                    ({"label": "x" * 48}, "luks2 label"),
                    ({"uuid": "nope"}, "luks2 uuid"),
                    ({"metadata_size": 12345}, "luks2 metadata_size"),
                    ({"data_offset": 32768}, "luks2 data_offset"),
                    ({"af_hash": "md5"}, "luks2 af_hash")):
        with pytest.raises(InvalidConfigError, match=msg):
            L.Luks2Params(**kw).check()


def test_source_must_be_whole_sectors(tmp_path):
    src = tmp_path / "odd.img"
    src.write_bytes(bytes(4096 + 512))
    with pytest.raises(InvalidConfigError, match="multiple of the LUKS2 sector size 4096"):
        L.encrypt_image(src, tmp_path / "c", params=FAST_PARAMS, keys=[PASS])
    assert not (tmp_path / "c").exists()
    L.encrypt_image(src, tmp_path / "c", params=L.Luks2Params(kdf=FAST, sector_size=512),
                    keys=[PASS])


def test_no_clobber_without_force(tmp_path):
    c = _container(tmp_path)
    before = c.read_bytes()
    with pytest.raises(UserInputError, match="file exists"):
        L.encrypt_image(tmp_path / "src.img", c, params=FAST_PARAMS, keys=[PASS])
    assert c.read_bytes() == before


# --------------------------------------------------------------------------- determinism


def test_seeded_containers_are_identical_and_seed_dependent(tmp_path):
    src = _image(tmp_path / "src.img")
    outs = []
    for i, seed in enumerate((b"s1", b"s1", b"s2")):
        out = tmp_path / f"c{i}"
        L.encrypt_image(src, out, params=FAST_PARAMS, keys=[PASS], entropy=L.Entropy(seed))
        outs.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert outs[0] == outs[1] != outs[2]
    unseeded = tmp_path / "u1", tmp_path / "u2"
    for u in unseeded:
        L.encrypt_image(src, u, params=FAST_PARAMS, keys=[PASS])
    assert unseeded[0].read_bytes() != unseeded[1].read_bytes()


def test_seeded_uuid_is_a_v4_uuid_and_explicit_uuid_wins(tmp_path):
    e = L.Entropy(b"seed")
    u = e.uuid()
    assert u[14] == "4" and u == L.Entropy(b"seed").uuid()
    c = _container(tmp_path, params=L.Luks2Params(kdf=FAST, uuid="7A1C2D3E-2222-4B4B-9C9C-000000000002"))
    assert L.open_header(c).uuid == "7a1c2d3e-2222-4b4b-9c9c-000000000002"


# --------------------------------------------------------------------------- streaming


def test_sparse_source_holes_are_encrypted_too(tmp_path, monkeypatch):
    src = tmp_path / "sparse.img"
    with open(src, "wb") as f:
        f.truncate(12 * MiB)
        f.seek(5 * MiB)
        f.write(b"\xab" * 4096)
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append(off) or real_pread(fd, n, off))
    with open(src, "rb") as f:
        chunks = list(L._chunks(f.fileno(), 12 * MiB, 4 * MiB))
    assert [off for off, _ in chunks] == [0, 4 * MiB, 8 * MiB]
    assert reads == [4 * MiB]  # only the chunk holding data was read
    assert b"".join(b for _, b in chunks) == src.read_bytes()
    monkeypatch.undo()
    out = tmp_path / "c"
    L.encrypt_image(src, out, params=FAST_PARAMS, keys=[PASS])
    data = out.read_bytes()[16 * MiB:]
    # every sector is encrypted: an all-zero (hole) plaintext sector is not zeros on disk
    assert all(data[i:i + 4096] != bytes(4096) for i in range(0, len(data), 4096))
    back = tmp_path / "back"
    L.decrypt_image(out, back, secret=PASS)
    assert back.read_bytes() == src.read_bytes()


def test_write_container_into_a_partition_leaves_the_rest(tmp_path):
    src = _image(tmp_path / "src.img", 1 * MiB)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x55" * (40 * MiB))
    with open(disk, "r+b") as f:
        L.write_container(src, f, params=FAST_PARAMS, keys=[PASS], dst_offset=2 * MiB)
    raw = disk.read_bytes()
    assert raw[:2 * MiB] == b"\x55" * (2 * MiB)
    assert raw[2 * MiB + 19 * MiB:] == b"\x55" * (40 * MiB - 21 * MiB)
    unused = raw[2 * MiB + 32768 + 258048:2 * MiB + 16 * MiB]  # header area after keyslot 0
    assert unused == bytes(len(unused))
    with open(disk, "rb") as f:
        h = L.read_header(f, 2 * MiB)
        vk = L.unlock(f, h, PASS)
    out = tmp_path / "out.img"
    L.decrypt_image(disk, out, volume_key=vk, offset=2 * MiB, size=1 * MiB)
    assert out.read_bytes() == src.read_bytes()


def test_progress_reports_every_chunk(tmp_path):
    seen = []
    _container(tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2 * MiB, 2 * MiB) and seen == sorted(seen)


# --------------------------------------------------------------------------- tokens

CLEVIS_PROTECTED = {"alg": "dir", "enc": "A256GCM",
                    "clevis": {"pin": "tpm2", "tpm2": {"hash": "sha256", "key": "ecc",
                                                       "pcr_bank": "sha256", "pcr_ids": "0,7",
                                                       "jwk_pub": "x", "jwk_priv": "y"}}}
CLEVIS_TOKEN = {"type": "clevis", "keyslots": ["1"],
                "jwe": {"ciphertext": "abc", "encrypted_key": "", "iv": "def", "tag": "ghi",
                        "protected": base64.urlsafe_b64encode(
                            json.dumps(CLEVIS_PROTECTED).encode()).decode().rstrip("=")}}
SYSTEMD_TOKEN = {"type": "systemd-tpm2", "keyslots": ["1"], "tpm2-blob": "AJ4AIA==",
                 "tpm2-pcrs": [7], "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc",
                 "tpm2-policy-hash": "00" * 32, "tpm2-pin": False}


def test_tokens_are_stored_checked_and_summarised(tmp_path):
    c = _container(tmp_path, keys=(PASS, b"second"), tokens=[CLEVIS_TOKEN, SYSTEMD_TOKEN])
    h = L.open_header(c)
    assert h.tokens["0"] == CLEVIS_TOKEN
    s = h.summary()
    assert s["tokens"] == {"0": {"type": "clevis", "keyslots": ["1"], "pin": "tpm2", "pcrs": [0, 7]},
                           "1": {"type": "systemd-tpm2", "keyslots": ["1"], "pcrs": [7],
                                 "pcr_bank": "sha256", "pin": False}}
    assert "salt" not in json.dumps(s) and "digest" not in json.dumps(s)


@pytest.mark.parametrize("token, msg", [
    ({"type": "clevis", "keyslots": ["0"]}, r"tokens\.0\.jwe: required for a clevis token"),
    ({"type": "systemd-tpm2", "keyslots": ["5"], "tpm2-blob": "", "tpm2-pcrs": [],
      "tpm2-policy-hash": ""}, r"keyslot '5' does not exist"),
    ({"keyslots": ["0"]}, r"tokens\.0\.type: missing"),
    ({"type": "x", "keyslots": [0]}, r"expected a list of keyslot ids"),
])
def test_bad_tokens_are_refused(tmp_path, token, msg):
    with pytest.raises(BadImageError, match=msg):
        _container(tmp_path, tokens=[token])


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_logs_or_reprs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="imagebuilder.disk.luks2")
    vk = os.urandom(64)
    c = _container(tmp_path, volume_key=vk)
    with open(c, "rb") as f:
        assert L.unlock(f, L.read_header(f), PASS) == vk
    L.decrypt_image(c, tmp_path / "o", secret=PASS)
    text = caplog.text + repr(L.KeySlotSpec(PASS)) + repr(L.open_header(c))
    for secret in (PASS.decode(), vk.hex(), base64.b64encode(vk).decode()):
        assert secret not in text
    assert "encrypting" in caplog.text  # the log did record the operation


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "luks2"


@pytest.mark.parametrize("name, want", [
    ("root-clevis-metadata.json", {"type": "clevis", "keyslots": ["1"], "pin": "tpm2", "pcrs": [7]}),
    ("root-se-metadata.json", {"type": "systemd-tpm2", "keyslots": ["1"], "pcrs": [7],
                               "pcr_bank": "sha256", "pin": False}),
])
def test_tokens_written_by_clevis_and_systemd_cryptenroll(name, want):
    """Metadata of our containers after ``clevis luks bind ... tpm2`` and
    ``systemd-cryptenroll --tpm2-device=auto`` inside a Debian 12 guest with swtpm."""
    md = json.loads((FIXTURES / name).read_text())
    for tid, tok in md["tokens"].items():
        L.check_token(tok, list(md["keyslots"]), f"tokens.{tid}")
    assert L.token_summary(md["tokens"]["0"]) == want
    # both tools add a PBKDF2 keyslot with 1000 iterations for their high-entropy key
    assert md["keyslots"]["1"]["kdf"]["type"] == "pbkdf2"
    assert md["keyslots"]["1"]["kdf"]["iterations"] == 1000


def test_empty_passphrase_needs_allow_empty(tmp_path):
    with pytest.raises(InvalidConfigError, match="keyslot 0: empty passphrase"):
        _container(tmp_path, keys=(b"",))
    c = _container(tmp_path, keys=(L.KeySlotSpec(b"", kdf=FAST, allow_empty=True),))
    with open(c, "rb") as f:
        assert len(L.unlock(f, L.read_header(f), b"")) == 64
