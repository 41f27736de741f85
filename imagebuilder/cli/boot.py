"""``imagebuilder boot``: boot a disk image or ISO under QEMU with the serial console attached."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from . import common


def boot_cmd(
    image: Path = typer.Argument(None, help="Disk image (raw, qcow2, ...) or ISO to boot. "
                                 "May be omitted with --kernel.", show_default=False),
    uefi: bool = typer.Option(False, "--uefi", help="Boot with OVMF (UEFI, q35) instead of SeaBIOS."),
    accel: str = typer.Option("auto", "--accel",
                              help="auto|kvm|tcg. auto uses KVM only if a probe kernel really "
                                   "boots under it (verdict cached), else TCG."),
    memory: int = typer.Option(2048, "--memory", "-m", help="Guest memory in MiB."),
    smp: int = typer.Option(None, "--smp", help="Guest CPUs (default: min(2, host CPUs))."),
    ignition: Path = typer.Option(None, "--ignition", "-i",
                                  help="Ignition config passed via fw_cfg (opt/com.coreos/config)."),
    timeout: float = typer.Option(600, "--timeout", "-t", help="Seconds before giving up."),
    expect: str = typer.Option(None, "--expect", "-e",
                               help="Stop with exit 0 once this regex appears on the console; "
                                    "exit 1 on timeout or if the guest exits first."),
    cdrom: bool = typer.Option(False, "--cdrom", help="Attach the image as a CD-ROM (default for ISOs)."),
    hybrid_disk: bool = typer.Option(False, "--hybrid-disk",
                                     help="Attach an ISO as a (virtio) disk, like a USB stick."),
    snapshot: bool = typer.Option(False, "--snapshot",
                                  help="Discard guest writes to the disk (qemu snapshot=on)."),
    kernel: Path = typer.Option(None, "--kernel", help="Direct kernel boot: this kernel."),
    initrd: list[Path] = typer.Option([], "--initrd", help="Initrd for --kernel (repeatable)."),
    karg: list[str] = typer.Option([], "--karg", help="Kernel argument (repeatable): for --kernel, "
                                   "or for an ISO, whose default entry is then booted directly "
                                   "with its own kargs plus these."),
    network: bool = typer.Option(False, "--net", help="Give the guest user-mode networking."),
    block_size: int = typer.Option(None, "--block-size",
                                   help="Disk sector size seen by the guest: 512 or 4096."),
    log: Path = typer.Option(None, "--log", help="Also write the raw console to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Don't echo the console."),
    json_out: bool = typer.Option(False, "--json", help="Print the verdict as JSON on stdout "
                                  "(the console then goes to stderr)."),
    qemu_arg: list[str] = typer.Option([], "--qemu-arg", help="Extra argument passed to QEMU (repeatable)."),
) -> None:
    """Boot IMAGE under QEMU with the serial console streamed to the terminal."""
    from ..boot.qemu import boot
    from ..errors import UserInputError, VerdictFailed

    if cdrom and hybrid_disk:
        raise UserInputError("--cdrom and --hybrid-disk exclude each other")
    if image is None and kernel is None:
        raise UserInputError("give an IMAGE to boot (or --kernel)")
    console = None
    if not quiet:
        console = sys.stderr.buffer if json_out else sys.stdout.buffer
    res = boot(image, uefi=uefi, accel=accel, memory=memory, smp=smp, ignition=ignition,
               expect=expect, timeout=timeout, log_path=log, cdrom=True if cdrom else None,
               hybrid_disk=hybrid_disk, snapshot=snapshot, kernel=kernel, initrds=initrd,
               kargs=karg, network=network, block_size=block_size, extra_args=qemu_arg,
               console=console)
    if console is not None:
        console.write(b"\n")
        console.flush()
    summary = {"matched": res.matched, "reason": res.reason, "duration": round(res.duration, 2),
               "accel": res.accel, "match": res.match, "qemu_exit": res.returncode}
    if json_out:
        common.emit_json(summary)
    what = {"matched": f"expectation met ({res.match!r})",
            "timeout": f"timed out after {timeout:g} s",
            "powered-off": "guest powered off",
            "guest-exited": f"QEMU exited with status {res.returncode}"}[res.reason]
    common.info(f"boot: {what} in {res.duration:.1f} s (accel {res.accel})")
    if expect is not None and not res.matched:
        raise VerdictFailed(f"--expect {expect!r} not seen: "
                            + ("timed out" if res.reason == "timeout" else "the guest exited first"))
    if expect is None and res.reason == "timeout":
        raise VerdictFailed(f"guest still running after {timeout:g} s")
    if expect is None and res.reason == "guest-exited":
        raise VerdictFailed(f"QEMU exited with status {res.returncode}")


def register(app: typer.Typer) -> None:
    app.command("boot", help="Boot a disk image or ISO under QEMU (serial console attached).",
                no_args_is_help=True)(boot_cmd)
