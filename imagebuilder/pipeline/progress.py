"""Build progress on stderr: one line per stage with its timing, a spinner while it runs."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .engine import BuildResult
    from .manifest import ResolvedStage


class Progress(Protocol):
    def build_started(self, name: str, total: int, cached: int) -> None: ...
    def stage_cached(self, rs: "ResolvedStage") -> None: ...
    def stage_started(self, rs: "ResolvedStage", note: str = "") -> None: ...
    def stage_finished(self, rs: "ResolvedStage", seconds: float) -> None: ...
    def stage_failed(self, rs: "ResolvedStage", seconds: float, tail: str, log: str) -> None: ...
    def message(self, text: str) -> None: ...
    def build_finished(self, result: "BuildResult") -> None: ...


class NullProgress:
    def build_started(self, name, total, cached): pass
    def stage_cached(self, rs): pass
    def stage_started(self, rs, note=""): pass
    def stage_finished(self, rs, seconds): pass
    def stage_failed(self, rs, seconds, tail, log): pass
    def message(self, text): pass
    def build_finished(self, result): pass


def _label(rs: "ResolvedStage") -> str:
    short = rs.stage.type.removeprefix("org.imagebuilder.")
    return f"{rs.pipeline}/{rs.index} {short}"


class RichProgress:
    """rich output on stderr; plain lines when stderr is not a terminal."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self._status: contextlib.AbstractContextManager | None = None

    def build_started(self, name: str, total: int, cached: int) -> None:
        self.console.print(f"[bold]building {name}[/]: {total} stages, {cached} cached")

    def stage_cached(self, rs: "ResolvedStage") -> None:
        self.console.print(f"  [dim]cached[/]  {_label(rs)}  [dim]{rs.id[:12]}[/]")

    def stage_started(self, rs: "ResolvedStage", note: str = "") -> None:
        if self.console.is_terminal:
            self._status = self.console.status(f"running {_label(rs)} {note}".rstrip())
            self._status.__enter__()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None

    def stage_finished(self, rs: "ResolvedStage", seconds: float) -> None:
        self._stop()
        self.console.print(f"  [green]ran[/]     {_label(rs)}  [dim]{rs.id[:12]}[/]  {seconds:7.2f} s")

    def stage_failed(self, rs: "ResolvedStage", seconds: float, tail: str, log: str) -> None:
        self._stop()
        self.console.print(f"  [red]FAILED[/]  {_label(rs)}  {seconds:7.2f} s")
        if tail:
            self.console.print(f"[dim]--- last lines of {log} ---[/]")
            self.console.out(tail.rstrip(), highlight=False)
            self.console.print("[dim]---[/]")

    def message(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")

    def build_finished(self, result: "BuildResult") -> None:
        self._stop()
        ran = sum(1 for s in result.stages if s.status == "ran")
        self.console.print(
            f"[bold green]done[/] in {result.seconds:.2f} s ({ran} ran, "
            f"{len(result.stages) - ran} cached) → {result.outdir}")
        for a in result.artifacts:
            self.console.print(f"  {a['name']}  {a['size']} bytes  sha256:{a['sha256'][:16]}…")


def default_progress(quiet: bool = False) -> Progress:
    if quiet:
        return NullProgress()
    try:
        return RichProgress()
    except Exception:  # pragma: no cover - rich missing
        print("rich unavailable: no progress output", file=sys.stderr)
        return NullProgress()
