"""``imagebuilder sign | verify | diff | sbom``: reproducible-build tooling for build outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from . import common


def _passphrase(key: Path, passphrase_file: Path | None) -> bytes | None:
    """The key's passphrase: from --passphrase-file, else prompted on a terminal, else None."""
    import sys

    from ..repro.sshsig import _is_encrypted_openssh

    if passphrase_file is not None:
        from ..fsutil import read_input

        return read_input(passphrase_file, "passphrase file").rstrip(b"\r\n")
    try:
        encrypted = _is_encrypted_openssh(key.read_bytes())
    except OSError:
        return None  # load_private_key reports it
    if encrypted and sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"passphrase for {key}: ").encode()
    return None


def sign_cmd(
    outdir: Path = typer.Argument(..., help="A build's output directory.", show_default=False),
    key: Path = typer.Option(..., "--key", "-k", help="OpenSSH Ed25519 private key (e.g. ~/.ssh/id_ed25519)."),
    passphrase_file: Path = typer.Option(None, "--passphrase-file",
                                         help="Read the key's passphrase from this file "
                                              "(default: prompt on a terminal)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing SHA256SUMS(.sig)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was signed as JSON."),
) -> None:
    """Write SHA256SUMS (artifacts, meta.json, manifest.json, SBOM) and its SSH signature
    SHA256SUMS.sig (namespace imagebuilder; ssh-keygen -Y verify accepts it)."""
    from ..repro.sign import sign_outdir
    from ..repro.sshsig import load_private_key

    pk = load_private_key(key, _passphrase(key, passphrase_file))
    res = sign_outdir(outdir, pk, force=force)
    if as_json:
        common.emit_json(res.to_dict())
        return
    for name in sorted(res.files):
        common.info(f"  {res.files[name]}  {name}")
    typer.echo(f"signed: {len(res.files)} files in {res.outdir}/SHA256SUMS with {res.fingerprint}")


def verify_cmd(
    outdir: Path = typer.Argument(..., help="A build's output directory.", show_default=False),
    pubkey: list[Path] = typer.Option([], "--pubkey", "-p",
                                      help="Trusted public key(s) (KEY.pub or an allowed_signers "
                                           "file): also check SHA256SUMS.sig. Repeatable."),
    no_image: bool = typer.Option(False, "--no-image",
                                  help="Skip reading the images (partition table, OSTree commit)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Re-hash every artifact against meta.json, check the manifest ids, the partition table,
    the deployed OSTree commit and (with --pubkey) the signature. Exit 1 on any mismatch."""
    from ..repro.sshsig import load_allowed
    from ..repro.verify import verify_outdir

    allowed = [k for p in pubkey for k in load_allowed(p)] if pubkey else None
    rep = verify_outdir(outdir, allowed=allowed, images=not no_image)
    if as_json:
        common.emit_json(rep.to_dict())
    else:
        for n in rep.notes:
            common.info(f"note: {n}")
        for line in rep.problems:
            typer.echo(f"mismatch: {line}")
        if rep.ok:
            signed = f", signed by {rep.signer}" if rep.signer else ""
            typer.echo(f"verified: {rep.artifacts} artifact{'s' * (rep.artifacts != 1)}{signed}")
    if not rep.ok:
        raise typer.Exit(1)


def diff_cmd(
    a: Path = typer.Argument(..., help="A build output directory or an image (raw, qcow2, ISO, ...).",
                             show_default=False),
    b: Path = typer.Argument(..., help="The other one (same kind).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Explain why two builds or images differ: meta.json fields, partition tables, filesystem
    metadata, files (mode/owner/times/xattrs/content), ISO records. Prints "identical" and
    exits 0 when they are the same, else one line per difference and exit 1."""
    import sys

    from ..repro.diff import diff_paths

    rep = diff_paths(a, b)
    if as_json:
        common.emit_json(rep.to_dict())
    else:
        sys.stdout.write(rep.render())
    if not rep.identical:
        raise typer.Exit(1)


def sbom_cmd(
    outdir: Path = typer.Argument(..., help="A build's output directory.", show_default=False),
    tree: Path = typer.Option(None, "--tree", help="The root filesystem tree (default: the build's "
                                                   "'tree' pipeline result in the cache)."),
    cache: Path = typer.Option(None, "--cache", help="Build cache holding that tree (default: the "
                                                     "default cache)."),
    output: Path = typer.Option(None, "--output", "-o", help="Where to write (default: "
                                                             "OUTDIR/sbom.spdx.json)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing SBOM."),
) -> None:
    """Write an SPDX 2.3 SBOM of a build: its Debian packages (or files), artifacts and their
    relationships. Deterministic for the same build."""
    from ..repro.outdir import SBOM
    from ..repro.sbom import sbom_for_outdir, write_sbom

    dest = output or outdir / SBOM
    from ..fsutil import check_output_target

    check_output_target(dest, force=force)
    doc = sbom_for_outdir(outdir, tree=tree, cache=cache)
    write_sbom(dest, doc, force=force)
    n_pkgs = sum(1 for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Package-"))
    typer.echo(f"sbom: {dest} ({n_pkgs} packages, {len(doc.get('files', []))} files, "
               f"{sum(1 for p in doc['packages'] if p['SPDXID'].startswith('SPDXRef-Artifact-'))} artifacts)")


def register(app: typer.Typer) -> None:
    app.command("sbom", help="Write an SPDX 2.3 SBOM (sbom.spdx.json) for a build.")(sbom_cmd)
    app.command("diff", help="Explain why two builds or images differ (exit 1 if they do).")(diff_cmd)
    app.command("sign", help="Write SHA256SUMS + an SSH signature (SHA256SUMS.sig) for a build.")(sign_cmd)
    app.command("verify", help="Check a build's outputs against meta.json (and its signature).")(verify_cmd)
