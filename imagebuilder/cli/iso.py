"""``imagebuilder iso ...``: customize CoreOS live ISOs in place (coreos-installer compatible).

Groups: ``ignition``, ``network``, ``kargs``, ``extract``; commands ``reset`` and
``inspect``. Heavy modules are imported inside the commands so that building
the CLI stays cheap. The command bodies live in :mod:`imagebuilder.cli.iso_ops`
(no typer), shared with the start-up fast path (:mod:`imagebuilder.cli.fastpath`)
that runs the hot verbs without building this CLI at all: an option added here
must be added to the fast path's table too (or the fast path falls back to typer
whenever it sees it, which is always safe).

Extension points for other commands (``iso customize``, the ``customize-iso``
alias, the ``pxe`` group):

* ``iso_app`` / ``extract_app``: the typer apps to add commands to;
* ``InputIso``, ``OutputOpt``, ``ForceOpt``: shared option/argument types;
* :func:`open_iso_image` / :func:`write_result` / :func:`check_output_target`:
  open an ISO and write the patches exactly like every ``iso`` verb does;
* :data:`EXTRA_REGISTRATIONS`: callables ``(app) -> None`` run by
  :func:`register` after the ``iso`` group is added.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import iso_ops
from . import pxe as _cz  # the customize flags, shared with pxe customize
from .common import emit_json
from .iso_ops import check_output_target, open_iso_image, write_result  # noqa: F401 (API)

_CTX = {"help_option_names": ["-h", "--help"]}

iso_app = typer.Typer(name="iso", no_args_is_help=True, context_settings=_CTX,
                      help="Customize CoreOS live ISO images in place (coreos-installer compatible).")
ignition_app = typer.Typer(name="ignition", no_args_is_help=True, context_settings=_CTX,
                           help="Embed, show or remove the live Ignition config.")
network_app = typer.Typer(name="network", no_args_is_help=True, context_settings=_CTX,
                          help="Embed, extract or remove NetworkManager keyfiles for the live system.")
kargs_app = typer.Typer(name="kargs", no_args_is_help=True, context_settings=_CTX,
                        help="Modify, reset or show the live kernel arguments.")
extract_app = typer.Typer(name="extract", no_args_is_help=True, context_settings=_CTX,
                          help="Extract artifacts from an ISO image.")
iso_app.add_typer(ignition_app, name="ignition")
iso_app.add_typer(network_app, name="network")
iso_app.add_typer(kargs_app, name="kargs")
iso_app.add_typer(extract_app, name="extract")

# -- shared options -------------------------------------------------------------------
InputIso = Annotated[Path, typer.Argument(metavar="ISO", help="The CoreOS live ISO image.",
                                          show_default=False)]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", metavar="PATH",
    help="Write to PATH (or '-' for stdout) instead of modifying ISO in place.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f",
                                        help="Overwrite existing customizations / output file.")]

EXTRA_REGISTRATIONS: list[Callable[[typer.Typer], None]] = []


# -- ignition ----------------------------------------------------------------------------
@ignition_app.command("embed")
def ignition_embed(
    input_iso: InputIso,
    ignition_file: Annotated[Optional[Path], typer.Option(
        "--ignition-file", "-i", metavar="FILE",
        help="Ignition config to embed [default: stdin].")] = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Embed an Ignition config in an ISO image."""
    iso_ops.ignition_embed(input_iso, ignition_file, output, force)


@ignition_app.command("show")
def ignition_show(input_iso: InputIso) -> None:
    """Show the embedded Ignition config of an ISO image."""
    iso_ops.ignition_show(input_iso)


@ignition_app.command("remove")
def ignition_remove(input_iso: InputIso, output: OutputOpt = None, force: ForceOpt = False) -> None:
    """Remove an existing embedded Ignition config from an ISO image (keeps network settings)."""
    iso_ops.ignition_remove(input_iso, output, force)


# -- network -----------------------------------------------------------------------------
@network_app.command("embed")
def network_embed(
    input_iso: InputIso,
    keyfile: Annotated[list[Path], typer.Option(
        "--keyfile", "-k", metavar="PATH",
        help="NetworkManager keyfile to embed (repeatable).")],
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Embed NetworkManager keyfiles for the live system's initramfs."""
    iso_ops.network_embed(input_iso, keyfile, output, force)


@network_app.command("extract")
def network_extract(
    input_iso: InputIso,
    directory: Annotated[Optional[Path], typer.Option(
        "--directory", "-C", metavar="DIR",
        help="Write the keyfiles into DIR [default: print them to stdout].")] = None,
) -> None:
    """Extract the embedded NetworkManager keyfiles."""
    import os

    from ..errors import UserInputError

    with open_iso_image(input_iso) as iso:
        files = iso.network_files
    if not files:
        raise UserInputError("No embedded network settings.")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            dest = directory / name
            try:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                raise UserInputError(f"{dest}: file exists") from None
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            print(dest)
        return
    out = []
    for i, (name, data) in enumerate(files.items()):
        if i:
            out.append(b"\n")
        out.append(f"########## {name} ##########\n".encode())
        out.append(data)
    iso_ops.write_stdout(b"".join(out))


@network_app.command("remove")
def network_remove(input_iso: InputIso, output: OutputOpt = None, force: ForceOpt = False) -> None:
    """Remove the embedded network settings (keeps the Ignition config)."""
    iso_ops.network_remove(input_iso, output, force)


# -- kargs -------------------------------------------------------------------------------
@kargs_app.command("modify")
def kargs_modify(
    input_iso: InputIso,
    append: Annotated[Optional[list[str]], typer.Option(
        "--append", "-a", metavar="KARG", help="Kernel argument to append (repeatable).")] = None,
    delete: Annotated[Optional[list[str]], typer.Option(
        "--delete", "-d", metavar="KARG", help="Kernel argument to delete (repeatable).")] = None,
    replace: Annotated[Optional[list[str]], typer.Option(
        "--replace", "-r", metavar="KARG=OLDVAL=NEWVAL",
        help="Kernel argument to replace (repeatable).")] = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Modify the live kernel arguments (delete, then append, then replace)."""
    iso_ops.kargs_modify(input_iso, append or [], delete or [], replace or [], output, force)


@kargs_app.command("reset")
def kargs_reset(input_iso: InputIso, output: OutputOpt = None, force: ForceOpt = False) -> None:
    """Reset the live kernel arguments to their defaults."""
    iso_ops.kargs_reset(input_iso, output, force)


@kargs_app.command("show")
def kargs_show(
    input_iso: InputIso,
    default: Annotated[bool, typer.Option("--default", "-d",
                                          help="Show the default kernel arguments.")] = False,
) -> None:
    """Show the live kernel arguments."""
    iso_ops.kargs_show(input_iso, default)


# -- whole image -------------------------------------------------------------------------
@iso_app.command("reset")
def iso_reset(input_iso: InputIso, output: OutputOpt = None, force: ForceOpt = False) -> None:
    """Restore the ISO to its pristine state: no embedded files, default kernel arguments."""
    iso_ops.iso_reset(input_iso, output, force)


@iso_app.command("inspect")
def iso_inspect(
    input_iso: InputIso,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show everything known about an ISO's embed areas and customizations."""
    with open_iso_image(input_iso) as iso:
        info = iso.inspect()
    if json_out:
        emit_json(info)
        return
    a = info["ignition_area"]
    lines = [
        f"ISO:            {info['path']} ({info['size']} bytes)",
        f"Volume ID:      {info['volume_id']}",
        f"Customized:     {'yes' if info['customized'] else 'no'}",
        f"Ignition area:  offset {a['offset']}, length {a['length']} "
        f"(via {a['source']}{', in ' + a['file'] if a['file'] else ''}), "
        f"{'in use' if a['in_use'] else 'empty'}",
    ]
    k = info["kargs"]
    if k is None:
        lines.append("Kernel args:    not customizable (no karg embed areas)")
    else:
        areas = ", ".join(f"{r['offset']}" + (f" ({r['file']})" if r["file"] else "")
                          for r in k["areas"])
        lines += [f"Kargs areas:    {k['size']} bytes each at {areas} (via {k['source']})",
                  f"Default kargs:  {k['default']}",
                  f"Current kargs:  {k['current']}"]
    f = info["features"]
    feats = [n for n in ("installer-config", "live-initrd-network") if f[n]]
    if f["installer-config-directives"]:
        feats.append("installer-config-directives(" +
                     ",".join(sorted(d for d, v in f["installer-config-directives"].items() if v))
                     + ")")
    lines.append(f"Features:       {', '.join(feats) if feats else 'none'}")
    files = info["embedded"]["files"]
    lines.append(f"Embedded files: {len(files)}")
    for e in files:
        lines.append(f"  {e['path']}  {e['size']} bytes  {e['mode']}  sha256:{e['sha256']}")
    print("\n".join(lines))


# -- deprecated coreos-installer spellings (hidden) ----------------------------------------
@iso_app.command("embed", hidden=True)
def iso_embed_deprecated(
    input_iso: InputIso,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", "--ignition-file", "-i",
                                                   metavar="FILE")] = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Deprecated: use `iso ignition embed`."""
    from .common import info

    info("`iso embed` is deprecated; use `iso ignition embed`.  Continuing.")
    ignition_embed(input_iso, config, output, force)


@iso_app.command("show", hidden=True)
def iso_show_deprecated(input_iso: InputIso) -> None:
    """Deprecated: use `iso ignition show`."""
    from .common import info

    info("`iso show` is deprecated; use `iso ignition show`.  Continuing.")
    ignition_show(input_iso)


@iso_app.command("remove", hidden=True)
def iso_remove_deprecated(input_iso: InputIso, output: OutputOpt = None,
                          force: ForceOpt = False) -> None:
    """Deprecated: use `iso ignition remove`."""
    from .common import info

    info("`iso remove` is deprecated; use `iso ignition remove`.  Continuing.")
    ignition_remove(input_iso, output, force)


@extract_app.command("pxe")
def extract_pxe(
    input_iso: InputIso,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", metavar="DIR",
                                             help="Output directory.")] = Path("."),
    force: ForceOpt = False,
) -> None:
    """Extract the PXE kernel, initramfs and rootfs (<isoname>-vmlinuz, -initrd.img, -rootfs.img)."""
    from ..iso.write import extract_pxe as _extract

    with open_iso_image(input_iso) as iso:
        for p in _extract(iso, output_dir, force=force):
            print(p)
        if iso.kargs_supported and iso.kargs != iso.default_kargs:
            from .common import info

            info(f"note: the ISO's live kernel arguments are not part of the PXE artifacts; "
                 f"put them in the PXE config: {iso.kargs}")


# -- customize (owned by the customize layer: imagebuilder/iso/customize.py) ------------
@iso_app.command("customize")
def iso_customize(
    input_iso: InputIso,
    output: OutputOpt = None,
    force: ForceOpt = False,
    dest_ignition: _cz.DestIgnition = None, dest_device: _cz.DestDevice = None,
    dest_console: _cz.DestConsole = None, dest_karg_append: _cz.DestKargAppend = None,
    dest_karg_delete: _cz.DestKargDelete = None, network_keyfile: _cz.NetworkKeyfile = None,
    network_nmstate: _cz.NetworkNmstate = None, ignition_ca: _cz.IgnitionCA = None,
    pre_install: _cz.PreInstall = None, post_install: _cz.PostInstall = None,
    installer_config: _cz.InstallerConfig = None, live_ignition: _cz.LiveIgnition = None,
    live_karg_append: _cz.LiveKargAppend = None, live_karg_replace: _cz.LiveKargReplace = None,
    live_karg_delete: _cz.LiveKargDelete = None,
    add_file: Annotated[Optional[list[str]], typer.Option(
        "--add-file", metavar="SRC:DEST",
        help="Add (or replace) a file in the ISO; rebuilds it (needs -o). Repeatable.")] = None,
    karg_append: Annotated[Optional[list[str]], typer.Option(
        "--karg-append", metavar="KARG",
        help="ISOs without embed areas: append to every boot entry's kernel line "
             "(rebuilds; needs -o). Repeatable.")] = None,
    karg_delete: Annotated[Optional[list[str]], typer.Option(
        "--karg-delete", metavar="KARG",
        help="ISOs without embed areas: delete from every kernel line (rebuilds; needs -o).")] = None,
    volume_id: Annotated[Optional[str], typer.Option(
        "--volume-id", metavar="LABEL", help="ISOs without embed areas: new volume ID (rebuilds).")] = None,
) -> None:
    """Customize a live ISO: install options, Ignition, network, live kargs (like coreos-installer)."""
    from .common import info

    c = _cz.customizations_from_options(
        dest_ignition=dest_ignition, dest_device=dest_device, dest_console=dest_console,
        dest_karg_append=dest_karg_append, dest_karg_delete=dest_karg_delete,
        network_keyfile=network_keyfile, network_nmstate=network_nmstate, ignition_ca=ignition_ca,
        pre_install=pre_install, post_install=post_install, installer_config=installer_config,
        live_ignition=live_ignition, live_karg_append=live_karg_append,
        live_karg_replace=live_karg_replace, live_karg_delete=live_karg_delete)
    check_output_target(output, force)
    if add_file or karg_append or karg_delete or volume_id is not None:
        from ..iso.rebuild import customize_rebuild  # the rebuild path (imagebuilder/iso/rebuild.py)

        r = customize_rebuild(input_iso, output, force, add_file=add_file or (),
                              karg_append=karg_append or (), karg_delete=karg_delete or (),
                              volume_id=volume_id, embed=c, notes=info)
        info(f"rebuilt {r.output}: {len(r.added_files)} file(s) added, {r.kernel_lines} kernel "
             f"line(s) edited in {len(r.edited_configs)} config(s), volume ID {r.volume_id!r}")
        return
    iso_ops.customize_in_place_areas(input_iso, output, force, c, notes=info)


def register(app: typer.Typer) -> None:
    app.add_typer(iso_app, name="iso")
    app.command("customize-iso", help="Alias of 'iso customize'.")(iso_customize)
    for extra in EXTRA_REGISTRATIONS:
        extra(app)
