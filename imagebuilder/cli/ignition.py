"""``imagebuilder ignition …``: work with Ignition configs (spec 3.0.0 – 3.6.0)."""

from __future__ import annotations

from pathlib import Path

import typer

ignition_app = typer.Typer(
    name="ignition",
    help="Validate, merge and inspect Ignition configs (spec 3.0.0 - 3.6.0; Butane too).",
    no_args_is_help=True,
)


@ignition_app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., metavar="FILE...",
                                       help="Ignition or Butane config(s); '-' reads stdin."),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report instead of text."),
) -> None:
    """Check configs the way Ignition does; print every problem with its JSON path,
    line and column. Butane configs (*.bu, or starting with 'variant:') are translated and
    their problems reported at YAML lines. Exit 1 if any config has errors (or warnings
    with --strict)."""
    from ..errors import VerdictFailed
    from ..ignition.load import check_user_config, default_files_dir, read_config_file
    from .common import emit_json

    # read everything first, so a missing file fails (exit 2) before any report is printed
    datas = [("<stdin>" if str(f) == "-" else str(f), read_config_file(f), default_files_dir(f)) for f in files]
    reports = [check_user_config(data, name, files_dir=fdir) for name, data, fdir in datas]
    if as_json:
        emit_json([r.to_dict(strict=strict) for r in reports])
    else:
        prefix = len(reports) > 1
        for r in reports:
            for p in r.problems:
                typer.echo(f"{r.source}: {p.format()}" if prefix else p.format())
    failed = [r.source for r in reports if not r.passes(strict=strict)]
    if failed:
        raise VerdictFailed(
            f"{len(failed)} of {len(reports)} config{'s' * (len(reports) > 1)} failed validation"
            + (" (--strict: warnings count)" if strict else "") + f": {', '.join(failed)}")


@ignition_app.command("merge")
def merge(
    base: Path = typer.Argument(..., metavar="BASE", help="The base config, Ignition or Butane ('-' reads stdin)."),
    children: list[Path] = typer.Argument(..., metavar="CHILD...", help="Configs merged over BASE, in order."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Render the config Ignition applies when BASE lists the CHILDren in
    ignition.config.merge (Ignition's merge rules; output at spec 3.6.0)."""
    import json

    from ..fsutil import check_output_target, write_atomic
    from ..ignition.load import load_user_config
    from ..ignition.merge import merge_bytes
    from .common import info

    if output is not None:
        check_output_target(output, force=force)
    base_raw = load_user_config(base)
    kids = [(load_user_config(c), str(c)) for c in children]
    result = merge_bytes(base_raw, kids, base_name=str(base))
    for w in result.warnings:
        info(f"warning: {w}")
    text = json.dumps(result.config, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text, force=force)
        info(f"wrote {output}")


@ignition_app.command("show")
def show(
    file: Path = typer.Argument(..., metavar="FILE", help="Ignition or Butane config ('-' reads stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print the decoded config as JSON."),
) -> None:
    """Show a config the way a person reads it: decoded file contents, units, users,
    kernel arguments, storage; remote sources listed, never fetched. Warns about
    certificates that are expired or expire within 24 hours."""
    from ..ignition.load import load_user_config
    from ..ignition.show import describe, render_text
    from .common import emit_json, info, stdout_console

    report = describe(load_user_config(file), source=str(file))
    for w in report.warnings:
        info(f"warning: {w}")
    if as_json:
        emit_json(report.doc)
    else:
        render_text(report.doc, stdout_console())


def register(app: typer.Typer) -> None:
    app.add_typer(ignition_app, name="ignition")
