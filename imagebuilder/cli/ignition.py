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

    datas = [(str(f), read_input(f, "Ignition config")) for f in files]  # all missing files fail first
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


def register(app: typer.Typer) -> None:
    app.add_typer(ignition_app, name="ignition")
