"""``imagebuilder sign``: ``SHA256SUMS`` over a build's outputs and its SSH signature.

``SHA256SUMS`` has one ``SHA256  NAME`` line per file (``sha256sum`` format, sorted by name,
so ``sha256sum -c SHA256SUMS`` checks it): every artifact, meta.json, manifest.json and the
SBOM. ``SHA256SUMS.sig`` is an SSH signature of it (namespace ``imagebuilder``, sha512), as
``ssh-keygen -Y sign -n imagebuilder`` would make it, so ::

    ssh-keygen -Y verify -n imagebuilder -I ID -f ALLOWED_SIGNERS -s SHA256SUMS.sig < SHA256SUMS

accepts it. Before signing, every artifact is checked against meta.json (a build whose
outputs do not match its own record is refused).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidConfigError, UserInputError
from ..fsutil import check_output_target, commit_tempfile
from ..sources.tarball import file_sha256
from . import sshsig
from .outdir import SUMS, SUMS_SIG, OutDir, safe_name


def render_sums(entries: dict[str, str]) -> str:
    """``sha256sum`` text for {name: sha256}, sorted by name."""
    return "".join(f"{entries[n]}  {n}\n" for n in sorted(entries))


def parse_sums(text: str, origin: str = SUMS) -> dict[str, str]:
    """{name: sha256} from ``sha256sum`` output; strict (one line per plain file name)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep:
            digest, sep, name = line.partition(" *")  # binary-mode marker
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidConfigError(f"{origin}:{n}: not a 'SHA256  NAME' line")
        if not safe_name(name):
            raise InvalidConfigError(f"{origin}:{n}: {name!r} is not a plain file name")
        if name in out:
            raise InvalidConfigError(f"{origin}:{n}: {name} is listed twice")
        out[name] = digest
    return out


def checksums(od: OutDir) -> dict[str, str]:
    """{name: sha256} of the files SHA256SUMS covers; refuses a build whose artifacts do not
    match meta.json."""
    sums: dict[str, str] = {}
    recorded = {a.name: a for a in od.artifacts()}
    for name in od.signed_names():
        p = od.path / name
        if not p.is_file() or p.is_symlink():
            raise InvalidConfigError(f"{p}: missing (listed in meta.json)")
        sums[name] = file_sha256(p)
        rec = recorded.get(name)
        if rec is not None and rec.sha256 is not None and rec.sha256 != sums[name]:
            raise InvalidConfigError(
                f"{p}: sha256 {sums[name]} differs from meta.json's {rec.sha256}",
                hint=f"run: imagebuilder verify {od.path}")
    return sums


@dataclass
class SignResult:
    outdir: Path
    files: dict[str, str]
    fingerprint: str
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"outdir": str(self.outdir), "key": self.fingerprint,
                "files": [{"name": n, "sha256": d} for n, d in sorted(self.files.items())],
                "written": self.written}


def sign_outdir(outdir: str | Path, key, *, force: bool = False) -> SignResult:
    """Write OUTDIR/SHA256SUMS and OUTDIR/SHA256SUMS.sig (``key``: a path or a loaded
    Ed25519 private key). Both are written to temp files first; existing ones are replaced
    only with ``force``."""
    od = OutDir.load(outdir)
    sums_path, sig_path = od.path / SUMS, od.path / SUMS_SIG
    for p in (sums_path, sig_path):
        check_output_target(p, force=force)
    if isinstance(key, (str, Path)):
        key = sshsig.load_private_key(key)
    files = checksums(od)
    text = render_sums(files).encode()
    sig = sshsig.sign_bytes(text, key).encode()
    tmps: list[Path] = []
    try:
        for dest, data in ((sums_path, text), (sig_path, sig)):
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                tmps.append(tmp)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, dest in zip(tmps, (sums_path, sig_path)):
            commit_tempfile(tmp, dest, force=force)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return SignResult(od.path, files, sshsig.public_key_of(key).fingerprint,
                      [SUMS, SUMS_SIG])


def verify_signature(outdir: str | Path, allowed: list[sshsig.PublicKey]) -> tuple[sshsig.PublicKey, dict[str, str]]:
    """Check OUTDIR/SHA256SUMS.sig against the trusted keys; return the signer and the
    signed {name: sha256}. Raises SignatureError / UserInputError."""
    od_path = Path(outdir)
    try:
        text = (od_path / SUMS).read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{od_path / SUMS}: not found (run imagebuilder sign first)") from None
    try:
        sig = (od_path / SUMS_SIG).read_bytes()
    except FileNotFoundError:
        raise sshsig.SignatureError(f"{od_path / SUMS_SIG}: not found") from None
    signer = sshsig.verify_bytes(text, sig, allowed, what=str(od_path / SUMS_SIG))
    try:
        sums = parse_sums(text.decode(), str(od_path / SUMS))
    except UnicodeDecodeError:
        raise InvalidConfigError(f"{od_path / SUMS}: not text") from None
    return signer, sums
