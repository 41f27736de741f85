"""``imagebuilder iso ...`` and ``customize-iso``: the command tables (parsed by
:mod:`imagebuilder.cli.argspec`) and handlers that call :mod:`imagebuilder.iso.commands`.

Handlers only turn parsed values into a library call and print what it returns. Nothing
heavy is imported at module level: this module is loaded on every ``iso`` command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .argspec import FLAG, LIST, VALUE, Arg, Command, Opt, stdin_notice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ISO = Arg("iso", "ISO", "The CoreOS live ISO image.")
OUTPUT = Opt(("-o", "--output"), "output", VALUE, "PATH",
             "Write the result to PATH ('-': stdout) instead of modifying ISO in place.")
FORCE = Opt(("-f", "--force"), "force", FLAG,
            help="Replace existing customizations; overwrite the output file.")
STRICT = Opt(("--strict",), "strict", FLAG,
             help="Refuse input that Ignition or NetworkManager would reject (default: a "
                  "warning, and it is embedded as given, like coreos-installer does).")


def _cmds():
    from ..iso import commands

    return commands


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _out(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# -- ignition ----------------------------------------------------------------------------
def ignition_embed(a: dict[str, Any]) -> None:
    from ..iso.inputs import read_ignition

    src = a["ignition_file"] or "-"
    if src == "-":
        stdin_notice("the Ignition config")
    config = read_ignition(src)
    _cmds().ignition_embed(a["iso"], config, output=a["output"], force=a["force"],
                           strict=a["strict"], where=src, say=_say)


def ignition_show(a: dict[str, Any]) -> None:
    _out(_cmds().ignition_show(a["iso"], say=_say))


def ignition_remove(a: dict[str, Any]) -> None:
    _cmds().ignition_remove(a["iso"], output=a["output"], force=a["force"], say=_say)


# -- network -----------------------------------------------------------------------------
def network_embed(a: dict[str, Any]) -> None:
    from ..iso.inputs import read_config

    files = [(p, read_config(p, "keyfile")) for p in a["keyfile"]]
    _cmds().network_embed(a["iso"], files, output=a["output"], force=a["force"],
                          strict=a["strict"], say=_say)


def network_extract(a: dict[str, Any]) -> None:
    from ..iso.pxe import keyfiles_report, write_keyfiles

    files = _cmds().network_extract(a["iso"], say=_say)
    if a["directory"] is None:
        _out(keyfiles_report(files))
        return
    for p in write_keyfiles(a["directory"], files):
        print(p)


def network_remove(a: dict[str, Any]) -> None:
    _cmds().network_remove(a["iso"], output=a["output"], force=a["force"], say=_say)


# -- kargs -------------------------------------------------------------------------------
def kargs_modify(a: dict[str, Any]) -> None:
    _cmds().kargs_modify(a["iso"], append=a["append"], delete=a["delete"],
                         replace=a["replace"], output=a["output"], force=a["force"], say=_say)


def kargs_reset(a: dict[str, Any]) -> None:
    _cmds().kargs_reset(a["iso"], output=a["output"], force=a["force"], say=_say)


def kargs_show(a: dict[str, Any]) -> None:
    print(_cmds().kargs_show(a["iso"], default=a["default"], say=_say))


# -- whole image -------------------------------------------------------------------------
def iso_reset(a: dict[str, Any]) -> None:
    _cmds().reset(a["iso"], output=a["output"], force=a["force"], say=_say)


def iso_inspect(a: dict[str, Any]) -> None:
    c = _cmds()
    info = c.inspect(a["iso"], say=_say)
    if a["json"]:
        from .common import emit_json

        emit_json(info)
    else:
        print(c.format_inspect(info))


def extract_pxe(a: dict[str, Any]) -> None:
    for p in _cmds().extract_pxe(a["iso"], a["output_dir"], force=a["force"], say=_say):
        print(p)


def deprecated(old: str, new: str, handler):
    def run(a: dict[str, Any]) -> None:
        _say(f"`{old}` is deprecated; use `{new}`.  Continuing.")
        handler(a)
    return run


# -- customize ---------------------------------------------------------------------------
REBUILD_OPTS = (
    Opt(("--add-file",), "add_file", LIST, "SRC:DEST",
        "Add (or replace) a file in the ISO; rebuilds it (needs -o). Repeatable."),
    Opt(("--karg-append",), "karg_append", LIST, "KARG",
        "ISOs without embed areas: append to every boot entry's kernel line (rebuilds; "
        "needs -o). Repeatable."),
    Opt(("--karg-delete",), "karg_delete", LIST, "KARG",
        "ISOs without embed areas: delete from every kernel line (rebuilds; needs -o). "
        "Repeatable."),
    Opt(("--volume-id",), "volume_id", VALUE, "LABEL",
        "ISOs without embed areas: new volume ID (rebuilds; needs -o)."),
)


def customize_opts(*, iso: bool) -> tuple[Opt, ...]:
    """The customize flags as options, made from the one table (CUSTOMIZE_FLAGS)."""
    from ..iso.flags import CUSTOMIZE_FLAGS

    return tuple(Opt((f.option,), f.field, LIST if f.repeat else VALUE, f.metavar,
                     f.help + (" (repeatable)." if f.repeat else "."))
                 for f in CUSTOMIZE_FLAGS if iso or not f.iso_only)


def customizations(a: dict[str, Any], *, iso: bool):
    from ..iso.flags import CUSTOMIZE_FLAGS, Customizations

    return Customizations(**{f.field: a[f.field] for f in CUSTOMIZE_FLAGS
                             if iso or not f.iso_only})


def iso_customize(a: dict[str, Any]) -> None:
    c = customizations(a, iso=True)
    r = _cmds().customize(a["iso"], c, output=a["output"], force=a["force"],
                          add_files=a["add_file"], karg_append=a["karg_append"],
                          karg_delete=a["karg_delete"], volume_id=a["volume_id"], say=_say)
    if r is not None:
        _say(f"rebuilt {r.output}: {len(r.added_files)} file(s) added, {r.kernel_lines} kernel "
             f"line(s) edited in {len(r.edited_configs)} config(s), volume ID {r.volume_id!r}")


CUSTOMIZE_HELP = ("Customize a live ISO: install options, Ignition, network, live kernel "
                  "arguments (like coreos-installer iso customize).\n"
                  "Other ISOs (no CoreOS embed areas) are rebuilt with --add-file, "
                  "--karg-append, --karg-delete, --volume-id.")


def _customize_command(words: tuple[str, ...]) -> Command:
    return Command(words, CUSTOMIZE_HELP,
                   (OUTPUT, FORCE, *customize_opts(iso=True), *REBUILD_OPTS), (ISO,),
                   iso_customize)


GROUPS: dict[tuple[str, ...], str] = {
    ("iso",): "Customize CoreOS live ISO images in place (coreos-installer compatible).",
    ("iso", "ignition"): "Embed, show or remove the live Ignition config.",
    ("iso", "network"): "Embed, extract or remove NetworkManager keyfiles for the live system.",
    ("iso", "kargs"): "Modify, reset or show the live kernel arguments.",
    ("iso", "extract"): "Extract artifacts from an ISO image.",
}

_IGN_FILE = Opt(("-i", "--ignition-file"), "ignition_file", VALUE, "FILE",
                "Ignition config to embed ('-' or left out: read from stdin).")

COMMANDS: list[Command] = [
    Command(("iso", "ignition", "embed"), "Embed an Ignition config in an ISO image.",
            (_IGN_FILE, OUTPUT, FORCE, STRICT), (ISO,), ignition_embed),
    Command(("iso", "ignition", "show"), "Show the embedded Ignition config of an ISO image.",
            (), (ISO,), ignition_show),
    Command(("iso", "ignition", "remove"),
            "Remove the embedded Ignition config from an ISO image (keeps network settings).",
            (OUTPUT, FORCE), (ISO,), ignition_remove),
    Command(("iso", "network", "embed"),
            "Embed NetworkManager keyfiles for the live system's initramfs.",
            (Opt(("-k", "--keyfile"), "keyfile", LIST, "PATH",
                 "NetworkManager keyfile to embed (repeatable).", required=True),
             OUTPUT, FORCE, STRICT), (ISO,), network_embed),
    Command(("iso", "network", "extract"), "Extract the embedded NetworkManager keyfiles.",
            (Opt(("-C", "--directory"), "directory", VALUE, "DIR",
                 "Write the keyfiles into DIR (default: print them to stdout)."),), (ISO,),
            network_extract),
    Command(("iso", "network", "remove"),
            "Remove the embedded network settings (keeps the Ignition config).",
            (OUTPUT, FORCE), (ISO,), network_remove),
    Command(("iso", "kargs", "modify"),
            "Modify the live kernel arguments (delete, then append, then replace).",
            (Opt(("-a", "--append"), "append", LIST, "KARG",
                 "Kernel argument to append (repeatable; skipped if already there)."),
             Opt(("-d", "--delete"), "delete", LIST, "KARG",
                 "Kernel argument to delete: KEY deletes every KEY and KEY=*, KEY=VALUE "
                 "exactly that one; it must exist (repeatable)."),
             Opt(("-r", "--replace"), "replace", LIST, "KEY=OLD=NEW",
                 "Replace KEY=OLD with KEY=NEW; it must exist (repeatable)."),
             OUTPUT, FORCE), (ISO,), kargs_modify),
    Command(("iso", "kargs", "reset"), "Reset the live kernel arguments to their defaults.",
            (OUTPUT, FORCE), (ISO,), kargs_reset),
    Command(("iso", "kargs", "show"), "Show the live kernel arguments.",
            (Opt(("-d", "--default"), "default", FLAG,
                 help="Show the default kernel arguments."),), (ISO,), kargs_show),
    Command(("iso", "reset"),
            "Restore the ISO to its pristine state: no embedded files, default kernel "
            "arguments (also repairs damaged embed areas).", (OUTPUT, FORCE), (ISO,), iso_reset),
    Command(("iso", "inspect"),
            "Show everything known about an ISO's embed areas and customizations.",
            (Opt(("--json",), "json", FLAG, help="Print JSON."),), (ISO,), iso_inspect),
    Command(("iso", "extract", "pxe"),
            "Extract the PXE kernel, initramfs and rootfs (<isoname>-vmlinuz, -initrd.img, "
            "-rootfs.img).",
            (Opt(("-o", "--output-dir"), "output_dir", VALUE, "DIR",
                 "Output directory (created if missing; default: the current directory).",
                 default=Path(".")), FORCE), (ISO,), extract_pxe),
    _customize_command(("iso", "customize")),
    _customize_command(("customize-iso",)),
    # coreos-installer's deprecated spellings
    Command(("iso", "embed"), "Deprecated: use `iso ignition embed`.",
            (Opt(("-c", "--config", "-i", "--ignition-file"), "ignition_file", VALUE, "FILE"),
             OUTPUT, FORCE, STRICT), (ISO,),
            deprecated("iso embed", "iso ignition embed", ignition_embed), hidden=True),
    Command(("iso", "show"), "Deprecated: use `iso ignition show`.", (), (ISO,),
            deprecated("iso show", "iso ignition show", ignition_show), hidden=True),
    Command(("iso", "remove"), "Deprecated: use `iso ignition remove`.", (OUTPUT, FORCE),
            (ISO,), deprecated("iso remove", "iso ignition remove", ignition_remove),
            hidden=True),
]


def register(app) -> None:
    """List ``iso`` and ``customize-iso`` in the main CLI's help; running them goes through
    :func:`imagebuilder.cli.argspec.run` (the typer stubs forward there too)."""
    register_forwarders(app, {"iso": GROUPS[("iso",)], "customize-iso": "Alias of 'iso customize'."})


def register_forwarders(app, commands: dict[str, str]) -> None:
    import typer

    from . import argspec

    def forwarder(word: str):
        def forward(ctx) -> None:
            raise typer.Exit(argspec.dispatch_word(word, list(ctx.args)))
        forward.__annotations__ = {"ctx": typer.Context, "return": None}  # typer reads these
        return forward

    for word, help_text in commands.items():
        app.command(word, help=help_text, add_help_option=False,
                    context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                      "help_option_names": []})(forwarder(word))
