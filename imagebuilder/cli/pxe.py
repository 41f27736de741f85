"""``imagebuilder pxe ...``: the command tables (parsed by :mod:`imagebuilder.cli.argspec`)
and handlers that call :mod:`imagebuilder.iso.pxe`."""

from __future__ import annotations

import sys

from .argspec import FLAG, LIST, VALUE, Arg, Command, Opt, stdin_notice
from .iso import STRICT, customizations, customize_opts, register_forwarders

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _write(output: str, data: bytes, force: bool) -> None:
    """A small result: to a file (atomic, no clobbering without force) or stdout ('-')."""
    if output == "-":
        from ..iso.write import check_stdout_not_tty

        check_stdout_not_tty()
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from ..fsutil import write_atomic

    write_atomic(output, data, force=force)


def pxe_customize(a: dict[str, Any]) -> None:
    from ..iso.pxe import pxe_customize as run

    if a["initrd"] == "-":
        stdin_notice("the initramfs")
    run(a["initrd"], customizations(a, iso=False), a["output"], force=a["force"], notes=_say)


def ignition_wrap(a: dict[str, Any]) -> None:
    from ..iso.inputs import check_ignition, read_ignition
    from ..iso.pxe import wrap_ignition

    src = a["ignition_file"]
    if src == "-":
        stdin_notice("the Ignition config")
    config = read_ignition(src)
    check_ignition(config, src, strict=a["strict"], warn=_say)
    _write(a["output"], wrap_ignition(config), a["force"])


def _initrd(path: str):
    """The initrd to read: a file, or stdin read into memory (bounded)."""
    from ..iso.inputs import read_config

    if path == "-":
        stdin_notice("the initrd")
        return read_config("-", "initrd")
    try:
        return open(path, "rb")
    except OSError as e:
        from ..errors import UserInputError

        raise UserInputError(f"{path}: {e.strerror or e}") from None


def ignition_unwrap(a: dict[str, Any]) -> None:
    from ..iso.pxe import unwrap_ignition

    src = _initrd(a["initrd"])
    data = unwrap_ignition(src)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def network_wrap(a: dict[str, Any]) -> None:
    from pathlib import Path

    from ..iso.inputs import check_keyfile, read_config
    from ..iso.pxe import wrap_network

    files = []
    for p in a["keyfile"]:
        data = read_config(p, "keyfile")
        check_keyfile(data, p, strict=a["strict"], warn=_say)
        files.append((Path(p).name, data))
    _write(a["output"], wrap_network(files), a["force"])


def network_unwrap(a: dict[str, Any]) -> None:
    from ..iso.pxe import keyfiles_report, unwrap_network, write_keyfiles

    files = unwrap_network(_initrd(a["initrd"]))
    if a["directory"] is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(keyfiles_report(files))
        sys.stdout.buffer.flush()
        return
    write_keyfiles(a["directory"], files)


FORCE_OUT = Opt(("-f", "--force"), "force", FLAG, help="Overwrite OUT if it exists.")
OUT = Opt(("-o", "--output"), "output", VALUE, "OUT", "Output initrd ('-' or left out: stdout).",
          default="-")
INITRD_IN = Arg("initrd", "INITRD", "Initrd ('-' or left out: stdin).", optional=True,
                default="-")

GROUPS: dict[tuple[str, ...], str] = {
    ("pxe",): "Customize CoreOS live PXE initramfs images.",
    ("pxe", "ignition"): "Wrap an Ignition config in an initrd for PXE booting.",
    ("pxe", "network"): "Wrap NetworkManager keyfiles in an initrd for PXE booting.",
}

COMMANDS: list[Command] = [
    Command(("pxe", "customize"),
            "Append a customization (install options, Ignition, network) to a live PXE "
            "initramfs.",
            (Opt(("-o", "--output"), "output", VALUE, "OUT",
                 "Output initramfs ('-' for stdout).", required=True),
             *customize_opts(iso=False), FORCE_OUT),
            (Arg("initrd", "INITRD", "Live PXE initramfs ('-': stdin)."),), pxe_customize),
    Command(("pxe", "ignition", "wrap"),
            "Wrap an Ignition config (as given) in an xz cpio initrd.",
            (Opt(("-i", "--ignition-file"), "ignition_file", VALUE, "PATH",
                 "Ignition config ('-' or left out: stdin).", default="-"),
             OUT, FORCE_OUT, STRICT), (), ignition_wrap),
    Command(("pxe", "ignition", "unwrap"), "Print the Ignition config wrapped in an initrd.",
            (), (INITRD_IN,), ignition_unwrap),
    Command(("pxe", "network", "wrap"),
            "Wrap NetworkManager keyfiles in an xz cpio initrd (etc/coreos-firstboot-network/).",
            (Opt(("-k", "--keyfile"), "keyfile", LIST, "PATH",
                 "NetworkManager keyfile (repeatable).", required=True),
             OUT, FORCE_OUT, STRICT), (), network_wrap),
    Command(("pxe", "network", "unwrap"),
            "Print (or with -C extract) the keyfiles wrapped in an initrd.",
            (Opt(("-C", "--directory"), "directory", VALUE, "DIR",
                 "Extract the keyfiles into DIR (created if missing)."),), (INITRD_IN,),
            network_unwrap),
]


def register(app) -> None:
    register_forwarders(app, {"pxe": GROUPS[("pxe",)]})
