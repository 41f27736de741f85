"""``imagebuilder butane …``: translate Butane configs (``variant: fcos`` / ``openshift``)."""

from __future__ import annotations

from pathlib import Path

import typer

butane_app = typer.Typer(
    name="butane",
    help="Translate Butane configs (fcos 1.0.0 - 1.7.0, openshift 4.8.0 - 4.22.0) to Ignition.",
    no_args_is_help=True,
)


@butane_app.command("translate")
def translate_cmd(
    file: Path = typer.Argument(..., metavar="FILE", help="Butane config (YAML); '-' reads stdin."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    files_dir: Path | None = typer.Option(
        None, "--files-dir", "-d",
        help="Directory that local references (local, contents_local, ssh_authorized_keys_local, "
             "trees) are relative to and confined to. Default: FILE's directory."),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
    pretty: bool = typer.Option(False, "--pretty", "-p", help="Indent the JSON output."),
    raw: bool = typer.Option(False, "--raw", "-r",
                             help="openshift: write the bare Ignition config, not a MachineConfig."),
    experimental: bool = typer.Option(False, "--experimental",
                                      help="Accept fcos 1.8.0-experimental (Ignition 3.7.0-experimental)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Translate FILE to an Ignition config (a MachineConfig for variant openshift), the way
    butane does; errors and warnings name the YAML path, line and column."""
    from ..butane.translate import translate
    from ..errors import InvalidConfigError
    from ..fsutil import check_output_target, write_atomic
    from ..ignition.load import default_files_dir, read_config_file
    from .common import info

    if output is not None:
        check_output_target(output, force=force)
    source = "<stdin>" if str(file) == "-" else str(file)
    data = read_config_file(file, "Butane config")
    result = translate(data, source=source, files_dir=files_dir or default_files_dir(file),
                       raw=raw, pretty=pretty, experimental=experimental)
    for p in result.problems:
        info(p.format())
    if not result.passes(strict=strict):
        n = len(result.errors) or len(result.warnings)
        what = "error" if result.errors else "warning"
        raise InvalidConfigError(
            f"{source}: translation failed: {n} {what}{'s' * (n > 1)}"
            + (" (--strict: warnings count)" if not result.errors else ""),
            hint=None if result.errors else "fix the warnings or drop --strict")
    assert result.output is not None
    if output is None:
        typer.echo(result.output.decode("utf-8"), nl=False)
    else:
        write_atomic(output, result.output, force=force)
        info(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(butane_app, name="butane")
