"""Command-line interface: one small module per command group.

Each module exposes ``register(app: typer.Typer)``. Modules import only typer
and ``cli.common`` at top level; library code is imported inside commands so
``imagebuilder --help`` and the fast ISO paths start quickly.
"""
