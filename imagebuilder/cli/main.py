"""The ``imagebuilder`` entry point: global options, sub-command registration and
the single top-level error handler."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from .. import __version__
from . import common

# Command modules, each with register(app). Listed here in the order they appear in --help.
COMMAND_MODULES = [
    "imagebuilder.cli.ignition",
    "imagebuilder.cli.iso",
    "imagebuilder.cli.pxe",
    "imagebuilder.cli.build",
    "imagebuilder.cli.boot",
    "imagebuilder.cli.image",
]

app = typer.Typer(
    name="imagebuilder",
    help="Build and customize bootable FCOS/RHCOS-style OS images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"imagebuilder {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="Log external commands (-v) and debug detail (-vv)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    common.setup_logging(verbose, debug)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(app)


_register_all()


def _is_usage_error(e: Exception) -> bool:
    """Click-style usage errors (typer >= 0.29 vendors click as typer._click)."""
    base = getattr(typer, "TyperException", None)
    if base is None:  # older typer on top of click
        import click

        base = click.exceptions.ClickException
    return isinstance(e, base) and hasattr(e, "show")


def main(argv: list[str] | None = None) -> int:
    from ..errors import ImageBuilderError, ToolError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except ImageBuilderError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if isinstance(e, ToolError) and e.stderr and (debug or common._state["verbose"]):
            print(e.stderr.rstrip(), file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:  # click usage errors, then genuine bugs
        if _is_usage_error(e):
            e.show()
            return int(getattr(e, "exit_code", 2) or 2)
        if debug:
            raise
        print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: this is a bug in imagebuilder; rerun with --debug for a traceback",
              file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
