"""``imagebuilder customize-image`` and ``imagebuilder inspect`` (FCOS-layout disk images)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import common


def customize_cmd(
    disk: Path = typer.Argument(..., help="Disk image (raw; qcow2/vmdk/... via libguestfs).",
                                show_default=False),
    ignition: str = typer.Option(None, "--ignition", "-i",
                                 help="Ignition config to embed at /boot/ignition/config.ign "
                                      "(validated first; '-' reads stdin). Sets --firstboot."),
    karg_append: list[str] = typer.Option([], "--karg-append",
                                          help="Add a kernel argument to every BLS entry (repeatable)."),
    karg_delete: list[str] = typer.Option([], "--karg-delete",
                                          help="Remove a kernel argument: KEY (all KEY, KEY=*) or "
                                               "KEY=VALUE (repeatable)."),
    platform: str = typer.Option(None, "--platform",
                                 help="Set ignition.platform.id (metal, qemu, ...)."),
    firstboot: bool = typer.Option(None, "--firstboot/--no-firstboot",
                                   help="Create/remove /boot/ignition.firstboot (Ignition runs "
                                        "on the next boot). Default: create with --ignition."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Write a customized copy here (atomically); default: in place."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite --output if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print what changed as JSON."),
) -> None:
    """Inject an Ignition config, kernel arguments, platform or the first-boot stamp into an image."""
    from ..image.customize import customize_image, load_customization

    c = load_customization(ignition=ignition, karg_append=karg_append, karg_delete=karg_delete,
                           platform=platform, firstboot=firstboot)
    rep = customize_image(disk, c, output=output, force=force)
    if json_out:
        common.emit_json(rep.to_dict())
        return
    for line in rep.changes:
        common.info(f"  {line}")
    for name, k in rep.kargs.items():
        common.info(f"  {name}: {k['after']}")
    common.info(f"customize-image: {rep.output} ({rep.backend}, {rep.seconds:.1f} s)")


def inspect_cmd(
    disk: Path = typer.Argument(..., help="Disk image (raw; qcow2/vmdk/... via libguestfs).",
                                show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Partitions, filesystems, OSTree deployments, kernel arguments and Ignition state of an image."""
    import sys

    from ..image.inspect import inspect_image, render_text

    rep = inspect_image(disk)
    if json_out:
        common.emit_json(rep)
    else:
        sys.stdout.write(render_text(rep))


def register(app: typer.Typer) -> None:
    app.command("customize-image",
                help="Embed an Ignition config / change kernel arguments of a disk image.")(customize_cmd)
    app.command("inspect", help="Show what is in a disk image (partitions, BLS, OSTree, Ignition).")(inspect_cmd)
