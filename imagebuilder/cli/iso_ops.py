"""The bodies of the ``imagebuilder iso ...`` verbs, free of typer.

Both front ends call these: the typer commands in :mod:`imagebuilder.cli.iso` and
the start-up fast path in :mod:`imagebuilder.cli.fastpath` (which parses the hot
verbs' plain argument lists itself, so an in-place embed never imports typer,
click, pydantic or rich). Keep them that way: standard library and
``imagebuilder.iso`` only, imported inside the functions where they are heavy.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs ~3 ms to import at start-up
if TYPE_CHECKING:
    from ..iso.customize import Customizations
    from ..iso.image import IsoImage, Region
    from ..iso.write import EarlyCopy


def check_output_target(output: str | None, force: bool) -> None:
    """Fail early (before any work) on a terminal stdout or an existing -o file."""
    from ..errors import UserInputError
    from ..iso.write import check_stdout_not_tty

    if output == "-":
        check_stdout_not_tty()
    elif output is not None and Path(output).exists() and not force:
        raise UserInputError(f"{output}: file exists", hint="use -f to overwrite")


def open_iso_image(path: Path) -> IsoImage:
    from ..iso.image import IsoImage

    return IsoImage.open(path)


def write_result(iso: IsoImage, patches: list[Region], output: str | None,
                 force: bool = False, early: EarlyCopy | None = None) -> None:
    """Apply patches: in place (output None), to stdout ('-') or to a new file."""
    from ..iso.write import write_result as _write

    _write(iso, patches, output, force, early=early)


@contextlib.contextmanager
def early_copy(input_iso: Path, output: str | None) -> Iterator[EarlyCopy | None]:
    """For ``-o FILE``: start copying the input now (see :class:`~imagebuilder.iso.write.EarlyCopy`);
    call after :func:`check_output_target`. Always cleaned up on exit."""
    if output is None or output == "-":
        yield None
        return
    from ..iso.write import EarlyCopy

    early = EarlyCopy.start(input_iso, output)
    try:
        yield early
    finally:
        if early is not None:
            early.discard()


def modify(input_iso: Path, output: str | None, force: bool,
           mutate: Callable[[IsoImage], object]) -> None:
    check_output_target(output, force)
    with early_copy(input_iso, output) as early, open_iso_image(input_iso) as iso:
        mutate(iso)
        write_result(iso, iso.patches(), output, force, early=early)


def write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def info(msg: str) -> None:
    """A status line on stderr (same as :func:`imagebuilder.cli.common.info`)."""
    print(msg, file=sys.stderr)


# -- ignition ----------------------------------------------------------------------------
def ignition_embed(input_iso: Path, ignition_file: Path | None, output: str | None,
                   force: bool) -> None:
    from ..errors import UserInputError
    from ..fsutil import read_input

    config = read_input(ignition_file if ignition_file is not None else "-", "Ignition config")

    def mutate(iso: IsoImage) -> None:
        if iso.has_ignition and not force:
            raise UserInputError(
                "This ISO image already has an embedded Ignition config; use -f to force.")
        iso.set_ignition(config)

    modify(input_iso, output, force, mutate)


def ignition_show(input_iso: Path) -> None:
    from ..errors import UserInputError

    with open_iso_image(input_iso) as iso:
        config = iso.ignition
    if config is None:
        raise UserInputError("No embedded Ignition config.")
    write_stdout(config)


def ignition_remove(input_iso: Path, output: str | None, force: bool) -> None:
    modify(input_iso, output, force, lambda iso: iso.remove_ignition())


# -- network -----------------------------------------------------------------------------
def network_embed(input_iso: Path, keyfile: Sequence[Path], output: str | None,
                  force: bool) -> None:
    from ..errors import UserInputError
    from ..fsutil import read_input

    files = [(p.name, read_input(p, "keyfile")) for p in keyfile]

    def mutate(iso: IsoImage) -> None:
        if not iso.features.live_initrd_network:
            raise UserInputError("This OS image does not support customizing network settings.")
        if iso.has_network and not force:
            raise UserInputError(
                "This ISO image already has embedded network settings; use -f to force.")
        iso.remove_network()
        iso.add_network_keyfiles(files)

    modify(input_iso, output, force, mutate)


def network_remove(input_iso: Path, output: str | None, force: bool) -> None:
    modify(input_iso, output, force, lambda iso: iso.remove_network())


# -- kargs -------------------------------------------------------------------------------
def kargs_modify(input_iso: Path, append: Sequence[str], delete: Sequence[str],
                 replace: Sequence[str], output: str | None, force: bool) -> None:
    modify(input_iso, output, force, lambda iso: iso.modify_kargs(
        append=list(append), delete=list(delete), replace=list(replace)))


def kargs_reset(input_iso: Path, output: str | None, force: bool) -> None:
    modify(input_iso, output, force, lambda iso: iso.reset_kargs())


def kargs_show(input_iso: Path, default: bool) -> None:
    with open_iso_image(input_iso) as iso:
        print(iso.default_kargs if default else iso.kargs)


# -- whole image -------------------------------------------------------------------------
def iso_reset(input_iso: Path, output: str | None, force: bool) -> None:
    modify(input_iso, output, force, lambda iso: iso.reset())


def customize_in_place_areas(input_iso: Path, output: str | None, force: bool,
                             c: Customizations,
                             notes: Callable[[str], None] | None = None) -> None:
    """``iso customize`` without the rebuild options: patch the embed areas.

    The caller has run :func:`check_output_target` (before any other work).
    """
    with early_copy(input_iso, output) as early:
        from ..iso.customize import customize_iso

        with open_iso_image(input_iso) as iso:
            customize_iso(iso, c, force=force, notes=notes or info)
            write_result(iso, iso.patches(), output, force, early=early)
