"""The ``imagebuilder`` entry point: global options, sub-command registration and
the single top-level error handler.

Start-up cost matters (an in-place ISO embed is a few ms of work), so importing
this module imports nothing heavy: :func:`main` first offers the command line to
:mod:`imagebuilder.cli.argspec` (the ``iso``/``pxe`` commands, parsed from their
tables without typer) and only otherwise builds the typer app (:func:`get_app`,
which imports and registers every command module). ``app`` is still importable;
it is built on first access.
"""

from __future__ import annotations

import sys

from .. import __version__
from . import common

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    import typer

# Command modules, each with register(app). Listed here in the order they appear in --help.
COMMAND_MODULES = [
    "imagebuilder.cli.ignition",
    "imagebuilder.cli.butane",
    "imagebuilder.cli.iso",
    "imagebuilder.cli.pxe",
    "imagebuilder.cli.build",
    "imagebuilder.cli.boot",
    "imagebuilder.cli.image",
    "imagebuilder.cli.repro",
]

_APP: typer.Typer | None = None


def _build_app() -> typer.Typer:
    import typer

    common.fix_typer_help()
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

    _register_all(app)
    return app


def _register_all(app: typer.Typer) -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(app)


def get_app() -> typer.Typer:
    """The typer app with every command module registered (built once, on first use)."""
    global _APP
    if _APP is None:
        _APP = _build_app()
    return _APP


def __getattr__(name: str):
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_usage_error(e: Exception) -> bool:
    """Click-style usage errors (typer >= 0.29 vendors click as typer._click)."""
    import typer

    base = getattr(typer, "TyperException", None)
    if base is None:  # older typer on top of click
        import click

        base = click.exceptions.ClickException
    return isinstance(e, base) and hasattr(e, "show")


def main(argv: list[str] | None = None) -> int:
    from ..errors import ImageBuilderError, ToolError

    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    try:
        from . import argspec

        rv = argspec.run(args)
        if rv is None:
            rv = get_app()(args=argv, standalone_mode=False)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:  # typer's Exit/Abort, click usage errors, then genuine bugs
        typer = sys.modules.get("typer")  # typer exceptions only exist if typer ran
        if typer is not None and isinstance(e, typer.Exit):
            return e.exit_code
        if typer is not None and isinstance(e, typer.Abort):
            print("aborted", file=sys.stderr)
            return 130
        if typer is not None and _is_usage_error(e):
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
