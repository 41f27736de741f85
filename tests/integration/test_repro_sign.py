"""SSH signatures (SSHSIG) against the real ssh-keygen, SHA256SUMS, and `verify` on small outdirs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError, UserInputError
from imagebuilder.repro import sshsig
from imagebuilder.repro.sign import parse_sums, render_sums, sign_outdir
from imagebuilder.repro.verify import verify_outdir

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                reason="needs ssh-keygen (apt-get install openssh-client)")


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "ci@example",
                    "-f", str(path)], check=True)
    return path


def allowed_signers(pub: Path, dest: Path, principal: str = "ci") -> Path:
    dest.write_text(f"{principal} {pub.read_text()}")
    return dest


def ssh_verify(data: Path, sig: Path, allowed: Path, namespace: str = "imagebuilder",
               principal: str = "ci") -> subprocess.CompletedProcess:
    with open(data, "rb") as f:
        return subprocess.run(["ssh-keygen", "-Y", "verify", "-n", namespace, "-I", principal,
                               "-f", str(allowed), "-s", str(sig)], stdin=f, capture_output=True,
                              text=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    return {"a": keygen(d / "a"), "b": keygen(d / "b"), "enc": keygen(d / "enc", "sekrit")}


def test_ssh_keygen_accepts_our_signature_and_we_match_its_bytes(keys, tmp_path):
    msg = tmp_path / "msg"
    msg.write_bytes(b"imagebuilder\n" * 1000)
    ours = tmp_path / "ours.sig"
    ours.write_text(sshsig.sign_bytes(msg.read_bytes(), sshsig.load_private_key(keys["a"])))
    allowed = allowed_signers(keys["a"].with_suffix(".pub"), tmp_path / "allowed")
    r = ssh_verify(msg, ours, allowed)
    assert r.returncode == 0, r.stderr
    assert 'Good "imagebuilder" signature for ci' in r.stdout + r.stderr
    # ssh-keygen's own signature: Ed25519 is deterministic, so the bytes are the same
    subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "imagebuilder", "-f", str(keys["a"]),
                    str(msg)], check=True, capture_output=True)
    theirs = Path(f"{msg}.sig").read_text()
    assert theirs == ours.read_text()
    signer = sshsig.verify_bytes(msg.read_bytes(), theirs,
                                 sshsig.load_allowed(keys["a"].with_suffix(".pub")))
    assert signer.comment == "ci@example"
    assert signer.fingerprint in subprocess.run(
        ["ssh-keygen", "-l", "-f", str(keys["a"].with_suffix(".pub"))],
        capture_output=True, text=True, check=True).stdout


def test_tampered_data_wrong_key_and_namespace_rejected(keys, tmp_path):
    data = b"abc  file\n"
    sig = sshsig.sign_bytes(data, keys["a"])
    a_pub = sshsig.load_allowed(keys["a"].with_suffix(".pub"))
    b_pub = sshsig.load_allowed(keys["b"].with_suffix(".pub"))
    assert sshsig.verify_bytes(data, sig, a_pub).raw == a_pub[0].raw
    with pytest.raises(sshsig.SignatureError, match="does not match the signed data"):
        sshsig.verify_bytes(data + b"x", sig, a_pub)
    with pytest.raises(sshsig.SignatureError, match="not a trusted key"):
        sshsig.verify_bytes(data, sig, b_pub)
    with pytest.raises(sshsig.SignatureError, match="namespace 'imagebuilder', not 'git'"):
        sshsig.verify_bytes(data, sig, a_pub, namespace="git")
    # allowed_signers restricting the key to another namespace
    restricted = sshsig.parse_allowed(f'ci namespaces="git,file" {keys["a"].with_suffix(".pub").read_text()}')
    assert restricted[0].principals == ("ci",) and restricted[0].namespaces == ("git", "file")
    with pytest.raises(sshsig.SignatureError, match="not a trusted key"):
        sshsig.verify_bytes(data, sig, restricted)
    # ssh-keygen agrees on the tampered case
    (tmp_path / "d").write_bytes(data + b"x")
    (tmp_path / "d.sig").write_text(sig)
    allowed = allowed_signers(keys["a"].with_suffix(".pub"), tmp_path / "allowed")
    assert ssh_verify(tmp_path / "d", tmp_path / "d.sig", allowed).returncode != 0
    # a flipped bit in the armoured signature
    blob = bytearray(sshsig.dearmor(sig))
    blob[-1] ^= 1
    with pytest.raises(sshsig.SignatureError):
        sshsig.verify_bytes(data, sshsig.armor(bytes(blob)), a_pub)
    with pytest.raises(sshsig.SignatureError, match="not an SSH signature"):
        sshsig.verify_bytes(data, "garbage", a_pub)


def test_key_errors(keys, tmp_path):
    with pytest.raises(sshsig.PassphraseNeeded, match="passphrase-protected"):
        sshsig.load_private_key(keys["enc"])
    with pytest.raises(UserInputError, match="wrong passphrase"):
        sshsig.load_private_key(keys["enc"], b"nope")
    k = sshsig.load_private_key(keys["enc"], b"sekrit")
    assert sshsig.public_key_of(k).raw == sshsig.load_allowed(keys["enc"].with_suffix(".pub"))[0].raw
    rsa = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    with pytest.raises(UserInputError, match="only Ed25519 keys can sign"):
        sshsig.load_private_key(rsa)
    with pytest.raises(UserInputError, match="no ssh-ed25519 public key"):
        sshsig.load_allowed(rsa.with_suffix(".pub"))
    with pytest.raises(UserInputError, match="not an SSH private key"):
        sshsig.load_private_key(keys["a"].with_suffix(".pub"))
    with pytest.raises(UserInputError, match="private key"):
        sshsig.load_allowed(keys["a"])
    with pytest.raises(UserInputError, match="not found"):
        sshsig.load_private_key(tmp_path / "nope")


def test_sums_format_round_trip_and_strictness():
    sums = {"b.raw": "1" * 64, "a.json": "2" * 64}
    text = render_sums(sums)
    assert text == f"{'2' * 64}  a.json\n{'1' * 64}  b.raw\n"
    assert parse_sums(text) == sums
    for bad in (f"{'1' * 64} x\n", f"{'1' * 63}  x\n", f"{'1' * 64}  ../x\n",
                f"{'1' * 64}  x\n{'2' * 64}  x\n"):
        with pytest.raises(InvalidConfigError):
            parse_sums(bad)


# --------------------------------------------------------------------------- small outdirs


def make_outdir(d: Path, payload: bytes = b"disk image bytes" * 4096) -> Path:
    """A minimal build output: one artifact (not a disk: no partition table recorded)."""
    d.mkdir()
    (d / "img.bin").write_bytes(payload)
    manifest = {"version": "1", "name": "t", "source_epoch": 0,
                "pipelines": [{"name": "p", "stages": []}], "artifacts": []}
    (d / "manifest.json").write_text(json.dumps(manifest))
    from imagebuilder.pipeline.manifest import Manifest, canonical_json

    msha = hashlib.sha256(canonical_json(Manifest.from_json(manifest).to_json())).hexdigest()
    meta = {"name": "t", "artifacts": [{"name": "img.bin", "format": "bin", "size": len(payload),
                                        "sha256": hashlib.sha256(payload).hexdigest()}],
            "build": {"manifest_sha256": msha}}
    (d / "meta.json").write_text(json.dumps(meta, indent=2))
    (d / "build.log").write_text("timings\n")
    return d


def test_sign_writes_sums_that_sha256sum_and_ssh_keygen_accept(keys, tmp_path, cli):
    od = make_outdir(tmp_path / "out")
    r = cli("sign", str(od), "--key", str(keys["a"]))
    assert r.returncode == 0, r.stderr
    assert b"signed: 3 files" in r.stdout
    lines = (od / "SHA256SUMS").read_text().splitlines()
    assert [ln.split("  ")[1] for ln in lines] == ["img.bin", "manifest.json", "meta.json"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=od).returncode == 0
    allowed = allowed_signers(keys["a"].with_suffix(".pub"), tmp_path / "allowed")
    rv = ssh_verify(od / "SHA256SUMS", od / "SHA256SUMS.sig", allowed)
    assert rv.returncode == 0, rv.stderr
    # no clobbering without -f
    r = cli("sign", str(od), "--key", str(keys["b"]))
    assert r.returncode == 2 and b"SHA256SUMS: file exists" in r.stderr
    r = cli("sign", str(od), "--key", str(keys["b"]), "-f")
    assert r.returncode == 0, r.stderr
    assert ssh_verify(od / "SHA256SUMS", od / "SHA256SUMS.sig", allowed).returncode != 0
    # an encrypted key without a terminal: a clear error, or the passphrase from a file
    r = cli("sign", str(od), "--key", str(keys["enc"]), "-f")
    assert r.returncode == 2 and b"passphrase-protected" in r.stderr
    (tmp_path / "pp").write_text("sekrit\n")
    r = cli("sign", str(od), "--key", str(keys["enc"]), "-f", "--passphrase-file", str(tmp_path / "pp"))
    assert r.returncode == 0, r.stderr


def test_sign_refuses_outputs_that_do_not_match_meta(keys, tmp_path):
    od = make_outdir(tmp_path / "out")
    with open(od / "img.bin", "r+b") as f:
        f.write(b"X")
    with pytest.raises(InvalidConfigError, match="differs from meta.json"):
        sign_outdir(od, keys["a"])
    assert not (od / "SHA256SUMS").exists() and not (od / "SHA256SUMS.sig").exists()


def test_verify_catches_each_kind_of_tampering(keys, tmp_path, cli):
    base = make_outdir(tmp_path / "base")
    sign_outdir(base, keys["a"])
    pub = str(keys["a"].with_suffix(".pub"))
    r = cli("verify", str(base), "--pubkey", pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.decode().startswith("verified: 1 artifact, signed by SHA256:")

    def variant(name: str, change) -> Path:
        d = tmp_path / name
        shutil.copytree(base, d)
        change(d)
        return d

    def flip(d: Path) -> None:
        with open(d / "img.bin", "r+b") as f:
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 0x01]))

    def edit_meta(d: Path) -> None:
        m = json.loads((d / "meta.json").read_text())
        m["artifacts"][0]["size"] += 1
        (d / "meta.json").write_text(json.dumps(m))

    def edit_meta_name(d: Path) -> None:  # only the signature catches this one
        m = json.loads((d / "meta.json").read_text())
        m["name"] = "other"
        (d / "meta.json").write_text(json.dumps(m))

    def edit_sums(d: Path) -> None:
        s = (d / "SHA256SUMS").read_text()
        (d / "SHA256SUMS").write_text(s.replace(s[0], "0" if s[0] != "0" else "1", 1))

    cases = {
        "flipped": (flip, ["img.bin: sha256", "differs from meta.json's", "differs from the signed"]),
        "meta": (edit_meta, ["size", "meta.json: sha256"]),
        "meta-name": (edit_meta_name, ["meta.json: sha256"]),
        "missing": (lambda d: (d / "img.bin").unlink(), ["img.bin: missing"]),
        "wrong-key": (lambda d: sign_outdir(d, keys["b"], force=True), ["not a trusted key"]),
        "sums": (edit_sums, ["does not match the signed data"]),
        "manifest": (lambda d: (d / "manifest.json").write_text(
            (d / "manifest.json").read_text().replace('"t"', '"u"')),
            ["manifest.json: sha256", "build.manifest_sha256"]),
    }
    allowed = sshsig.load_allowed(pub)
    for name, (change, needles) in cases.items():
        rep = verify_outdir(variant(name, change), allowed=allowed)
        out = "\n".join(rep.problems)
        assert not rep.ok, name
        for n in needles:
            assert n in out, (name, n, out)
    # the CLI: one "mismatch:" line per problem, exit 1
    r = cli("verify", str(tmp_path / "flipped"), "--pubkey", pub)
    out = r.stdout.decode()
    assert r.returncode == 1, (out, r.stderr)
    assert "verified" not in out and len(out.splitlines()) == 2
    assert all(line.startswith("mismatch: ") for line in out.splitlines()), out
    # without --pubkey only the hashes and the manifest are checked
    d = variant("nosig", flip)
    rep = verify_outdir(d)
    assert not rep.ok and len(rep.problems) == 1
    assert verify_outdir(variant("nosig-name", edit_meta_name)).ok
    # --json
    r = cli("verify", str(tmp_path / "missing"), "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["verified"] is False and any("missing" in p for p in rep["problems"])


def test_verify_bad_inputs(tmp_path, cli):
    r = cli("verify", str(tmp_path / "nope"))
    assert r.returncode == 2 and b"not a directory" in r.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "meta.json").write_text("{")
    r = cli("verify", str(tmp_path / "d"))
    assert r.returncode == 3 and b"invalid JSON" in r.stderr
    (tmp_path / "d" / "meta.json").write_text(json.dumps({"artifacts": [{"name": "../etc/passwd",
                                                                          "sha256": "0" * 64}]}))
    r = cli("verify", str(tmp_path / "d"))
    assert r.returncode == 1 and b"not a plain file name" in r.stdout
