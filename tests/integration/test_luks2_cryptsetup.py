"""Our LUKS2 writer and reader against the real cryptsetup (no device-mapper needed):
luksDump reads exactly the metadata we wrote, --test-passphrase and --dump-volume-key
accept our keyslots (PBKDF2 and Argon2id, passphrase and key file), our reader opens
cryptsetup's keyslots and decrypts data cryptsetup encrypted, luksAddKey/luksKillSlot and
reencrypt work on our containers, and an ext4 image survives the round trip byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.disk import luks2 as L
from imagebuilder.secrets import secret_tempfile

MiB = 1 << 20
PASS = b"correct horse battery staple"
UUID = "7a1c2d3e-2222-4b4b-9c9c-000000000002"
FAST = L.Kdf.pbkdf2(iterations=1000)
SMALL_ARGON = L.Kdf.argon2("argon2id", time=4, memory=32768, cpus=2)



def cryptsetup(*args: str | Path, secret: bytes | None = None, check: bool = True,
               tmp: Path | None = None) -> subprocess.CompletedProcess:
    """cryptsetup ARGS [--key-file F] with the secret in a 0600 temp file."""
    exe = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
    argv = [exe, *map(str, args)]
    if secret is None:
        return subprocess.run(argv, capture_output=True, text=True, check=check)
    with secret_tempfile(secret, dir=tmp) as kf:
        return subprocess.run([*argv, "--key-file", str(kf)], capture_output=True, text=True,
                              check=check)


def _payload(path: Path, size: int, seed: int = 7) -> Path:
    path.write_bytes(hashlib.shake_256(seed.to_bytes(4, "big")).digest(size))
    return path


def _dumped_volume_key(container: Path, secret: bytes, tmp: Path) -> bytes:
    out = cryptsetup("luksDump", "--dump-volume-key", "--batch-mode", container,
                     secret=secret, tmp=tmp).stdout
    hexpart = out.split("MK dump:", 1)[1]
    return bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", hexpart)))


@pytest.fixture
def ours(tmp_path: Path):
    """A container with a PBKDF2 passphrase slot, a preferred Argon2id key-file slot and two
    tokens."""
    src = _payload(tmp_path / "src.img", 4 * MiB)
    keyfile = os.urandom(256)
    vk = os.urandom(64)
    tokens = [{"type": "clevis", "keyslots": ["1"],
               "jwe": {"ciphertext": "c", "encrypted_key": "", "iv": "i", "protected": "e30", "tag": "t"}},
              {"type": "systemd-tpm2", "keyslots": ["0"], "tpm2-blob": "AA==", "tpm2-pcrs": [7],
               "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc", "tpm2-policy-hash": "00" * 32,
               "tpm2-pin": False}]
    params = L.Luks2Params(kdf=FAST, label="luks-root", subsystem="imagebuilder", uuid=UUID,
                           flags=("allow-discards",))
    out = tmp_path / "ours.luks"
    result = L.encrypt_image(src, out, params=params, volume_key=vk, tokens=tokens,
                             keys=[PASS, L.KeySlotSpec(keyfile, kdf=SMALL_ARGON, priority=2)])
    return {"src": src, "luks": out, "keyfile": keyfile, "vk": vk, "result": result, "tmp": tmp_path}


def test_luksdump_reads_exactly_what_we_wrote(ours):
    c = ours["luks"]
    cryptsetup("isLuks", "--type", "luks2", c)
    dumped = json.loads(cryptsetup("luksDump", "--dump-json-metadata", c).stdout)
    assert dumped == L.open_header(c).metadata
    text = cryptsetup("luksDump", c).stdout
    for line in (f"UUID:          \t{UUID}", "Label:         \tluks-root",
                 "Subsystem:     \timagebuilder", "Epoch:         \t1",
                 "Metadata area: \t16384 [bytes]", "Keyslots area: \t16744448 [bytes]",
                 "Flags:       \tallow-discards", "offset: 16777216 [bytes]",
                 "cipher: aes-xts-plain64", "sector: 4096 [bytes]",
                 "PBKDF:      pbkdf2", "PBKDF:      argon2id", "Memory:     32768",
                 "Threads:    2", "AF stripes: 4000", "Area length:258048 [bytes]",
                 "0: clevis", "1: systemd-tpm2", "Priority:   normal", "Priority:   preferred"):
        assert line in text, line
    assert ours["result"].as_dict() == {
        "uuid": UUID, "label": "luks-root", "cipher": "aes-xts-plain64", "key_size": 512,
        "pbkdf": "pbkdf2", "sector_size": 4096, "data_offset": 16 * MiB,
        "payload_size": 4 * MiB, "keyslots": 2, "tokens": ["clevis", "systemd-tpm2"]}


def test_cryptsetup_accepts_passphrase_and_keyfile_and_dumps_our_volume_key(ours):
    c, tmp = ours["luks"], ours["tmp"]
    cryptsetup("open", "--test-passphrase", "--key-slot", "0", c, secret=PASS, tmp=tmp)
    cryptsetup("open", "--test-passphrase", "--key-slot", "1", c, secret=ours["keyfile"], tmp=tmp)
    wrong = cryptsetup("open", "--test-passphrase", c, secret=b"wrong", tmp=tmp, check=False)
    assert wrong.returncode == 2 and "No key available" in wrong.stderr
    assert _dumped_volume_key(c, PASS, tmp) == ours["vk"]
    assert _dumped_volume_key(c, ours["keyfile"], tmp) == ours["vk"]


@pytest.mark.parametrize("pbkdf", [["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha512"],
                                   ["--pbkdf", "argon2id", "--pbkdf-force-iterations", "4",
                                    "--pbkdf-memory", "32768", "--pbkdf-parallel", "1"]],
                         ids=["pbkdf2-sha512", "argon2id"])
def test_reader_opens_a_cryptsetup_header(tmp_path, pbkdf):
    """luksFormat with a known volume key; our data encryption after it; our reader unlocks
    cryptsetup's keyslot and decrypts."""
    src = _payload(tmp_path / "src.img", 3 * MiB)
    vk = os.urandom(64)
    c = tmp_path / "cs.luks"
    with open(c, "wb") as f:
        f.truncate(16 * MiB + 3 * MiB)
    with secret_tempfile(vk, dir=tmp_path) as vkf:
        cryptsetup("luksFormat", "--batch-mode", "--type", "luks2", "--volume-key-file", vkf,
                   "--key-size", "512", "--sector-size", "4096", "--uuid", UUID, "--label", "cs",
                   *pbkdf, c, secret=PASS, tmp=tmp_path)
    h = L.open_header(c)
    assert (h.uuid, h.label, h.data_offset, h.sector_size) == (UUID, "cs", 16 * MiB, 4096)
    with open(src, "rb") as s, open(c, "r+b") as f:
        L.encrypt_stream(s.fileno(), 3 * MiB, f.fileno(), h.data_offset,
                         L.SectorCipher(vk, h.cipher, h.sector_size))
    with open(c, "rb") as f:
        assert L.unlock(f, h, PASS) == vk
    out = tmp_path / "out.img"
    L.decrypt_image(c, out, secret=PASS)
    assert out.read_bytes() == src.read_bytes()


def _mkfs(tmp_path: Path, size_mib: int, name: str = "fs.ext4") -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/marker").write_text("luks round trip\n")
    (tree / "blob").write_bytes(os.urandom(3 * MiB))
    with open(tree / "sparse", "wb") as f:
        f.truncate(5 * MiB)
        f.write(b"end")
    img = tmp_path / name
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-T", "default", "-U", "clear",
                    "-E", "nodiscard", "-d", str(tree), str(img), f"{size_mib}M"], check=True)
    return img


def test_ext4_round_trip_is_byte_identical(tmp_path):
    img = _mkfs(tmp_path, 64)
    c = tmp_path / "root.luks"
    L.encrypt_image(img, c, params=L.Luks2Params(kdf=FAST), keys=[PASS])
    cryptsetup("open", "--test-passphrase", c, secret=PASS, tmp=tmp_path)
    out = tmp_path / "back.ext4"
    L.decrypt_image(c, out, secret=PASS)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(img.read_bytes()).digest()
    subprocess.run(["e2fsck", "-fn", str(out)], check=True, capture_output=True)
    cat = subprocess.run(["debugfs", "-R", "cat /etc/marker", str(out)], capture_output=True, text=True)
    assert cat.stdout == "luks round trip\n"


def test_luksaddkey_and_killslot_work_on_our_container(ours):
    c, tmp = ours["luks"], ours["tmp"]
    with secret_tempfile(b"new passphrase", dir=tmp) as newf:
        cryptsetup("luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                   c, newf, secret=PASS, tmp=tmp)
    cryptsetup("luksKillSlot", "--batch-mode", c, "0")
    h = L.open_header(c)
    assert sorted(h.keyslots) == ["1", "2"] and h.seqid > 1 and h.warnings == ()
    with open(c, "rb") as f:
        with pytest.raises(L.WrongKeyError):
            L.unlock(f, h, PASS)
        assert L.unlock(f, h, b"new passphrase") == ours["vk"]
    out = tmp / "out.img"
    L.decrypt_image(c, out, secret=b"new passphrase", size=4 * MiB)
    assert out.read_bytes() == ours["src"].read_bytes()


@pytest.mark.root
def test_cryptsetup_reencrypt_reads_our_data(ours):
    """reencrypt decrypts our data with our volume key and re-encrypts it with a new one."""
    c, tmp = ours["luks"], ours["tmp"]
    cryptsetup("reencrypt", "--batch-mode", "--force-offline-reencrypt", "--key-slot", "0",
               "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", c, secret=PASS, tmp=tmp)
    new_vk = _dumped_volume_key(c, PASS, tmp)
    assert new_vk != ours["vk"]
    out = tmp / "out.img"
    L.decrypt_image(c, out, secret=PASS, size=4 * MiB)
    assert out.read_bytes() == ours["src"].read_bytes()


@pytest.mark.root
def test_reader_decrypts_what_cryptsetup_encrypted(tmp_path):
    """cryptsetup reencrypt --encrypt on a plain ext4 image (userspace crypto, no dm)."""
    img = _mkfs(tmp_path, 48)
    original = img.read_bytes()
    work = tmp_path / "work.img"
    with open(work, "wb") as f:
        f.write(original)
        f.truncate(len(original) + 32 * MiB)
    cryptsetup("reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "32M",
               "--sector-size", "4096", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
               "--batch-mode", "--force-offline-reencrypt", work, secret=PASS, tmp=tmp_path)
    h = L.open_header(work)
    out = tmp_path / "out.ext4"
    L.decrypt_image(work, out, secret=PASS, size=len(original))
    assert out.read_bytes() == original
    subprocess.run(["e2fsck", "-fn", str(out)], check=True, capture_output=True)
    assert h.sector_size == 4096


def test_damaged_primary_header_both_sides_agree(ours):
    c, tmp = ours["luks"], ours["tmp"]
    with open(c, "r+b") as f:
        f.seek(4096 + 10)
        f.write(b"#")
    h = L.open_header(c)
    assert h.used_copy == "secondary"
    assert h.warnings[0] == "primary header (offset 0): checksum mismatch"
    # cryptsetup falls back to the secondary copy as well
    cryptsetup("open", "--test-passphrase", c, secret=PASS, tmp=tmp)
    assert json.loads(cryptsetup("luksDump", "--dump-json-metadata", c).stdout) == h.metadata


def test_seeded_container_is_reproducible_and_valid(tmp_path):
    src = _payload(tmp_path / "src.img", 1 * MiB)
    digests = []
    for name in ("a", "b"):
        out = tmp_path / name
        L.encrypt_image(src, out, params=L.Luks2Params(kdf=FAST, label="r"), keys=[PASS],
                        entropy=L.Entropy(b"ci-seed"))
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    cryptsetup("open", "--test-passphrase", tmp_path / "a", secret=PASS, tmp=tmp_path)
    assert _dumped_volume_key(tmp_path / "a", PASS, tmp_path) == L.Entropy(b"ci-seed").take("volume-key", 64)


def test_first_boot_empty_passphrase_slot(tmp_path):
    """The unattended first-boot slot: empty passphrase, cheap PBKDF2, tried first
    (systemd-cryptsetup ``try-empty-password=yes``); wiped once a TPM2 is enrolled."""
    src = _payload(tmp_path / "src.img", 1 * MiB)
    c = tmp_path / "fb.luks"
    first_boot = L.KeySlotSpec(b"", kdf=FAST, priority=2, allow_empty=True)
    L.encrypt_image(src, c, params=L.Luks2Params(kdf=FAST), keys=[PASS, first_boot])
    exe = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
    # typed at a prompt, a lone newline is the empty passphrase
    subprocess.run([exe, "open", "--test-passphrase", "--key-slot", "1", str(c)], input=b"\n",
                   check=True, capture_output=True)
    assert "Priority:   preferred" in cryptsetup("luksDump", c).stdout
    with open(c, "rb") as f:
        h = L.read_header(f)
        assert L.unlock(f, h, b"") == L.unlock(f, h, PASS)
    cryptsetup("luksKillSlot", "--batch-mode", c, "1")
    with open(c, "rb") as f, pytest.raises(L.WrongKeyError):
        L.unlock(f, L.read_header(f), b"")
