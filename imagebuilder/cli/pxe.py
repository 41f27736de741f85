"""``pxe customize`` and ``pxe ignition/network wrap|unwrap``: PXE live initramfs customization.

A PXE initramfs cannot be patched in place like an ISO's embed area; as coreos-installer
does, ``pxe customize`` copies the input initramfs and appends one more xz-compressed
newc archive holding the customization (the kernel unpacks concatenated archives, later
files win). The customize flags are shared with ``iso customize`` (see
:func:`customizations_from_options`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from ..errors import UserInputError
from ..fsutil import atomic_output
from . import common

if TYPE_CHECKING:
    from ..iso.customize import Customizations

# (library modules are imported inside the functions: building the CLI stays cheap)
INITRD_IGNITION_PATH = "config.ign"
INITRD_NETWORK_DIR = "etc/coreos-firstboot-network"
INITRD_FEATURES_PATH = "etc/coreos/features.json"

LIVE_STAMP = "etc/coreos-live-initramfs"
PXE_KARGS_WARNING = ("PXE configuration must include kernel arguments: "
                     "ignition.firstboot ignition.platform.id=metal")

# --- the customize flags, shared with ``iso customize`` --------------------------------

_P = "PATH"
DestIgnition = Annotated[list[str] | None, typer.Option(
    "--dest-ignition", metavar=_P, help="Ignition config for the installed system (repeatable).")]
DestDevice = Annotated[str | None, typer.Option(
    "--dest-device", metavar="DEV", help="Install to this device, without confirmation.")]
DestConsole = Annotated[list[str] | None, typer.Option(
    "--dest-console", metavar="SPEC",
    help="Kernel and bootloader console of the installed system, e.g. ttyS0,115200n8 (repeatable).")]
DestKargAppend = Annotated[list[str] | None, typer.Option(
    "--dest-karg-append", metavar="ARG", help="Kernel argument to add to the installed system (repeatable).")]
DestKargDelete = Annotated[list[str] | None, typer.Option(
    "--dest-karg-delete", metavar="ARG",
    help="Default kernel argument to delete from the installed system (repeatable).")]
NetworkKeyfile = Annotated[list[str] | None, typer.Option(
    "--network-keyfile", metavar=_P,
    help="NetworkManager keyfile for the live system, copied to the installed one (repeatable).")]
NetworkNmstate = Annotated[list[str] | None, typer.Option(
    "--network-nmstate", metavar=_P,
    help="nmstate YAML/JSON translated to keyfiles, like --network-keyfile (repeatable).")]
IgnitionCA = Annotated[list[str] | None, typer.Option(
    "--ignition-ca", metavar=_P, help="CA certificate (PEM) trusted by Ignition, live and installed (repeatable).")]
PreInstall = Annotated[list[str] | None, typer.Option(
    "--pre-install", metavar=_P, help="Script to run before installation (repeatable).")]
PostInstall = Annotated[list[str] | None, typer.Option(
    "--post-install", metavar=_P, help="Script to run after installation (repeatable).")]
InstallerConfig = Annotated[list[str] | None, typer.Option(
    "--installer-config", metavar=_P, help="coreos-installer config file (repeatable).")]
LiveIgnition = Annotated[list[str] | None, typer.Option(
    "--live-ignition", metavar=_P, help="Ignition config merged into the live system's config (repeatable).")]
LiveKargAppend = Annotated[list[str] | None, typer.Option(
    "--live-karg-append", metavar="ARG", help="Kernel argument to add to the live system (repeatable).")]
LiveKargReplace = Annotated[list[str] | None, typer.Option(
    "--live-karg-replace", metavar="K=OLD=NEW",
    help="Replace a default live kernel argument's value (repeatable).")]
LiveKargDelete = Annotated[list[str] | None, typer.Option(
    "--live-karg-delete", metavar="ARG", help="Default live kernel argument to delete (repeatable).")]


def customizations_from_options(
    *, dest_ignition: list[str] | None = None, dest_device: str | None = None,
    dest_console: list[str] | None = None, dest_karg_append: list[str] | None = None,
    dest_karg_delete: list[str] | None = None, network_keyfile: list[str] | None = None,
    network_nmstate: list[str] | None = None, ignition_ca: list[str] | None = None,
    pre_install: list[str] | None = None, post_install: list[str] | None = None,
    installer_config: list[str] | None = None, live_ignition: list[str] | None = None,
    live_karg_append: list[str] | None = None, live_karg_replace: list[str] | None = None,
    live_karg_delete: list[str] | None = None,
) -> Customizations:
    from ..iso.customize import Customizations

    def t(v: list[str] | None) -> tuple[str, ...]:
        return tuple(v or ())

    return Customizations(
        dest_ignition=t(dest_ignition), dest_device=dest_device, dest_console=t(dest_console),
        dest_karg_append=t(dest_karg_append), dest_karg_delete=t(dest_karg_delete),
        network_keyfile=t(network_keyfile), network_nmstate=t(network_nmstate),
        ignition_ca=t(ignition_ca), pre_install=t(pre_install), post_install=t(post_install),
        installer_config=t(installer_config), live_ignition=t(live_ignition),
        live_karg_append=t(live_karg_append), live_karg_replace=t(live_karg_replace),
        live_karg_delete=t(live_karg_delete),
    )


# --- library-level PXE operations ---------------------------------------------------------

def customize_initrd(initrd: bytes, c: Customizations, *, where: str = "initramfs") -> bytes:
    """The customization archive to append to a live PXE initramfs (b"" for a no-op).

    Refuses an initramfs that is not a CoreOS live one or that is already customized.
    """
    from ..iso import cpio
    from ..iso.customize import build_initrd_members, features_from_json

    members = cpio.read_initrd(initrd)
    if LIVE_STAMP not in members:
        raise UserInputError(f"{where}: not a CoreOS live initramfs image")
    if INITRD_IGNITION_PATH in members or any(
            p.startswith(INITRD_NETWORK_DIR + "/") for p in members):
        raise UserInputError(f"{where}: this initramfs is already customized")
    feat = members.get(INITRD_FEATURES_PATH)
    features = features_from_json(feat.data if feat else None, where=f"{where}:{INITRD_FEATURES_PATH}")
    new = build_initrd_members(c, features, notes=common.info)
    if INITRD_IGNITION_PATH in new:
        common.info(PXE_KARGS_WARNING)
    if not new:
        return b""
    return cpio.write_initrd(cpio.members_from(new.items()))


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserInputError(f"reading {path}: {e.strerror or e}") from None


def _emit(output: str | None, chunks: list[bytes], *, force: bool) -> None:
    """Write chunks to output: a file (atomic, no clobber without force) or stdout ('-'/None)."""
    if output is None or output == "-":
        out: BinaryIO = sys.stdout.buffer
        if out.isatty():
            raise UserInputError("Refusing to write binary data to terminal",
                                 hint="redirect stdout or use -o FILE")
        for c in chunks:
            out.write(c)
        out.flush()
        return
    with atomic_output(output, force=force, mode=0o644) as (_tmp, f):
        for c in chunks:
            f.write(c)


# --- commands -------------------------------------------------------------------------------

def register(app: typer.Typer) -> None:
    from ..iso import cpio

    pxe = typer.Typer(help="Customize CoreOS live PXE initramfs images.", no_args_is_help=True)
    ign = typer.Typer(help="Wrap an Ignition config in an initrd for PXE booting.", no_args_is_help=True)
    net = typer.Typer(help="Wrap NetworkManager keyfiles in an initrd for PXE booting.",
                      no_args_is_help=True)

    @pxe.command("customize")
    def pxe_customize(
        initrd: Annotated[str, typer.Argument(metavar="INITRD", help="Live PXE initramfs.")],
        output: Annotated[str, typer.Option("--output", "-o", metavar="OUT",
                                            help="Output initramfs ('-' for stdout).")],
        dest_ignition: DestIgnition = None, dest_device: DestDevice = None,
        dest_console: DestConsole = None, dest_karg_append: DestKargAppend = None,
        dest_karg_delete: DestKargDelete = None, network_keyfile: NetworkKeyfile = None,
        network_nmstate: NetworkNmstate = None, ignition_ca: IgnitionCA = None,
        pre_install: PreInstall = None, post_install: PostInstall = None,
        installer_config: InstallerConfig = None, live_ignition: LiveIgnition = None,
        force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT if it exists.")] = False,
    ) -> None:
        """Append a customization (install options, Ignition, network) to a live PXE initramfs."""
        c = customizations_from_options(
            dest_ignition=dest_ignition, dest_device=dest_device, dest_console=dest_console,
            dest_karg_append=dest_karg_append, dest_karg_delete=dest_karg_delete,
            network_keyfile=network_keyfile, network_nmstate=network_nmstate,
            ignition_ca=ignition_ca, pre_install=pre_install, post_install=post_install,
            installer_config=installer_config, live_ignition=live_ignition)
        if output != "-" and os.path.lexists(output) and not force:
            raise UserInputError(f"{output}: File exists", hint="use --force (-f) to overwrite")
        data = _read_input(initrd)
        tail = customize_initrd(data, c, where=initrd)
        _emit(output, [data, tail], force=force)

    @ign.command("wrap")
    def ignition_wrap(
        input: Annotated[str, typer.Option("--ignition-file", "-i", metavar="PATH",
                                           help="Ignition config ('-' or omitted: stdin).")] = "-",
        output: Annotated[str, typer.Option("--output", "-o", metavar="OUT",
                                            help="Output initrd ('-' or omitted: stdout).")] = "-",
        force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT.")] = False,
    ) -> None:
        """Wrap an Ignition config (unchecked, as given) in an xz cpio initrd."""
        data = _read_input(input)
        _emit(output, [cpio.write_initrd(cpio.members_from([(INITRD_IGNITION_PATH, data)]))],
              force=force)

    @ign.command("unwrap")
    def ignition_unwrap(
        initrd: Annotated[str, typer.Argument(metavar="INITRD", help="Initrd ('-': stdin).")] = "-",
    ) -> None:
        """Print the Ignition config wrapped in an initrd."""
        members = cpio.read_initrd(_read_input(initrd))
        m = members.get(INITRD_IGNITION_PATH)
        if m is None:
            raise UserInputError("No embedded Ignition config.")
        sys.stdout.buffer.write(m.data)
        sys.stdout.flush()

    @net.command("wrap")
    def network_wrap(
        keyfile: Annotated[list[str], typer.Option("--keyfile", "-k", metavar="PATH",
                                                   help="NetworkManager keyfile (repeatable).")],
        output: Annotated[str, typer.Option("--output", "-o", metavar="OUT",
                                            help="Output initrd ('-' or omitted: stdout).")] = "-",
        force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT.")] = False,
    ) -> None:
        """Wrap NetworkManager keyfiles in an xz cpio initrd (etc/coreos-firstboot-network/)."""
        members: dict[str, bytes] = {}
        for path in keyfile:
            name = Path(path).name
            if f"{INITRD_NETWORK_DIR}/{name}" in members:
                raise UserInputError(f"multiple input files named '{name}'")
            members[f"{INITRD_NETWORK_DIR}/{name}"] = _read_input(path)
        _emit(output, [cpio.write_initrd(cpio.members_from(members.items()))], force=force)

    @net.command("unwrap")
    def network_unwrap(
        initrd: Annotated[str, typer.Argument(metavar="INITRD", help="Initrd ('-': stdin).")] = "-",
        directory: Annotated[str | None, typer.Option(
            "--directory", "-C", metavar="DIR", help="Extract the keyfiles into DIR.")] = None,
    ) -> None:
        """Print (or with -C extract) the keyfiles wrapped in an initrd."""
        members = cpio.read_initrd(_read_input(initrd))
        prefix = INITRD_NETWORK_DIR + "/"
        files = {p[len(prefix):]: m.data for p, m in sorted(members.items())
                 if p.startswith(prefix) and "/" not in p[len(prefix):]}
        if not files:
            raise UserInputError("No embedded network settings.")
        if directory is None:
            out = sys.stdout.buffer
            for i, (name, data) in enumerate(files.items()):
                if i:
                    out.write(b"\n")
                out.write(f"########## {name} ##########\n".encode())
                out.write(data)
            out.flush()
            return
        d = Path(directory)
        if not d.is_dir():
            raise UserInputError(f"{d}: not a directory")
        for name, data in files.items():
            with atomic_output(d / name, force=False, mode=0o600) as (_tmp, f):
                f.write(data)

    pxe.add_typer(ign, name="ignition")
    pxe.add_typer(net, name="network")
    app.add_typer(pxe, name="pxe")
