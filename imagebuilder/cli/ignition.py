"""``imagebuilder ignition …``: work with Ignition configs (spec 3.0.0 – 3.6.0)."""

from __future__ import annotations

from pathlib import Path

import typer

ignition_app = typer.Typer(
    name="ignition",
    help="Validate and inspect Ignition configs (spec 3.0.0 - 3.6.0).",
    no_args_is_help=True,
)


@ignition_app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="Ignition config(s); '-' reads stdin."),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report instead of text."),
) -> None:
    """Check configs the way Ignition does; print every problem with its JSON path,
    line and column. Exit 1 if any config has errors (or warnings with --strict)."""
    from ..errors import VerdictFailed
    from ..fsutil import read_input
    from ..ignition.validate import validate_config
    from .common import emit_json

    # read everything first, so a missing file fails (exit 2) before any report is printed
    datas = [("<stdin>" if str(f) == "-" else str(f), read_input(f, "Ignition config")) for f in files]
    reports = [validate_config(data, source=name) for name, data in datas]
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
    base: Path = typer.Argument(..., metavar="BASE", help="The base config ('-' reads stdin)."),
    children: list[Path] = typer.Argument(..., metavar="CHILD...", help="Configs merged over BASE, in order."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Render the config Ignition applies when BASE lists the CHILDren in
    ignition.config.merge (Ignition's merge rules; output at spec 3.6.0)."""
    import json

    from ..fsutil import read_input, write_atomic
    from ..ignition.merge import merge_bytes
    from .common import info

    if output is not None and output.exists() and not force:
        from ..errors import UserInputError

        raise UserInputError(f"{output}: file exists", hint="use --force (-f) to overwrite")
    base_raw = read_input(base, "Ignition config")
    kids = [(read_input(c, "Ignition config"), str(c)) for c in children]
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
    file: Path = typer.Argument(..., metavar="FILE", help="Ignition config ('-' reads stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print the decoded config as JSON."),
) -> None:
    """Show a config the way a person reads it: decoded file contents, units, users,
    kernel arguments, storage; remote sources listed, never fetched. Warns about
    certificates that are expired or expire within 24 hours."""
    from ..fsutil import read_input
    from ..ignition.show import describe, render_text
    from .common import emit_json, info, stdout_console

    report = describe(read_input(file, "Ignition config"), source=str(file))
    for w in report.warnings:
        info(f"warning: {w}")
    if as_json:
        emit_json(report.doc)
    else:
        render_text(report.doc, stdout_console())


def register(app: typer.Typer) -> None:
    app.add_typer(ignition_app, name="ignition")
