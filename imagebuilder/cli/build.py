"""``imagebuilder build | manifest | run | stages``: OSTree disk images from a pipeline of stages."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import common

CACHE_HELP = "Object store (build cache). Default: $XDG_CACHE_HOME/imagebuilder or ~/.cache/imagebuilder."
CHECKPOINT_HELP = ("Only store these in the cache: globs over pipeline names (= their last stage), "
                   "stage types and stage ids, or an id prefix. Repeatable. Default: all (every stage).")


def _index():
    from ..pipeline.stages import StageIndex

    return StageIndex()


def _load_manifest_file(path: Path):
    from ..errors import InvalidConfigError
    from ..fsutil import read_input
    from ..pipeline.manifest import Manifest

    raw = read_input(path, "manifest")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidConfigError(f"{path}: not JSON: {e}") from None
    return Manifest.from_json(data, origin=str(path))


def _resolve_definition(image: Path):
    from ..pipeline.definition import load_definition
    from ..pipeline.manifest import from_definition, resolve

    index = _index()
    definition = load_definition(image)
    manifest = from_definition(definition, index)
    return resolve(manifest, index)


def _execute(resolved, output: Path | None, cache: Path | None, checkpoint: list[str],
             force: bool, as_json: bool, quiet: bool) -> None:
    from ..pipeline.engine import BuildOptions, Engine
    from ..pipeline.progress import default_progress
    from ..pipeline.store import default_cache_dir

    name = resolved.manifest.name
    opts = BuildOptions(
        cache=cache or default_cache_dir(),
        outdir=output or Path("out") / name,
        force=force,
        checkpoints=tuple(checkpoint),
    )
    result = Engine(resolved, opts, default_progress(quiet=quiet)).build()
    if as_json:
        common.emit_json(result.to_json())


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        image: Path = typer.Argument(..., help="Image definition (YAML).", metavar="IMAGE.yaml"),
        output: Path = typer.Option(None, "--output", "-o", help="Output directory. Default: ./out/NAME."),
        cache: Path = typer.Option(None, "--cache", help=CACHE_HELP),
        checkpoint: list[str] = typer.Option([], "--checkpoint", help=CHECKPOINT_HELP),
        force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output directory."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON build summary on stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Build the disk image described by IMAGE.yaml (only changed stages rerun)."""
        _execute(_resolve_definition(image), output, cache, checkpoint, force, as_json, quiet)

    @app.command("manifest")
    def manifest(
        image: Path = typer.Argument(..., help="Image definition (YAML).", metavar="IMAGE.yaml"),
        no_ids: bool = typer.Option(False, "--no-ids", help="Leave out the stage and pipeline ids."),
    ) -> None:
        """Print the fully resolved manifest (pipelines, stages, options, ids) as JSON."""
        resolved = _resolve_definition(image)
        common.emit_json(resolved.manifest.to_json(None if no_ids else resolved))

    @app.command("run")
    def run(
        manifest_file: Path = typer.Argument(..., help="Manifest JSON ('-' for stdin).", metavar="MANIFEST.json"),
        output: Path = typer.Option(None, "--output", "-o", help="Output directory. Default: ./out/NAME."),
        cache: Path = typer.Option(None, "--cache", help=CACHE_HELP),
        checkpoint: list[str] = typer.Option([], "--checkpoint", help=CHECKPOINT_HELP),
        force: bool = typer.Option(False, "--force", "-f", help="Replace an existing output directory."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON build summary on stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Execute a manifest (as printed by `imagebuilder manifest`)."""
        from ..pipeline.manifest import resolve

        resolved = resolve(_load_manifest_file(manifest_file), _index())
        _execute(resolved, output, cache, checkpoint, force, as_json, quiet)

    @app.command("stages")
    def stages(
        as_json: bool = typer.Option(False, "--json", help="Machine-readable list with schemas."),
    ) -> None:
        """List the available stages with their summaries."""
        index = _index()
        infos = index.all()
        if as_json:
            common.emit_json({
                "directory": str(index.directory),
                "stages": [{"name": i.name, "summary": i.summary, "description": i.description,
                            "schema": i.schema, "sha256": i.digest} for i in infos],
            })
            return
        from rich.table import Table

        table = Table(title=f"stages in {index.directory}", title_justify="left")
        table.add_column("stage")
        table.add_column("summary")
        for i in infos:
            table.add_row(i.name, i.summary)
        common.stdout_console().print(table)
