"""Deploy an OSTree commit into a sysroot split into partition contents.

The stage's tree becomes::

    boot/   the boot partition: loader -> loader.1, loader.1/entries/ostree-1-OS.conf,
            ostree/OS-BOOTCSUM/{vmlinuz,initramfs}-KVER
    root/   the root partition: ostree/repo, ostree/deploy/OS/{var,deploy/COMMIT.0},
            boot/ (empty: the boot partition's mount point)
    efi/    empty (the disk stage fills the ESP)

How: ``ostree admin init-fs --modern root``, ``os-init``, repo config
``sysroot.bootloader none`` *before* the deploy (else ostree detects GRUB and runs
grub2-mkconfig), ``pull-local`` from the input repository, ``ostree admin deploy
--karg-append=...``. OSTree writes BLS paths relative to /boot (``linux /ostree/...``,
no ``/boot`` prefix while ``sysroot.bootprefix`` is unset), which is what a separate
boot partition needs. We deploy with a scratch tmpfs on ``root/boot`` (see
:func:`scratch_boot`: ostree freezes the filesystem holding /boot) and copy its
contents to ``boot/``; ``root/boot`` stays as the empty mount point. The deployment directory's
immutable flag (``chattr +i`` by ostree) is cleared so the engine can copy and remove
the tree; the record lists it for the disk stage to set again.

Deterministic as far as ostree allows: the deployment is named after the commit
(``COMMIT.0``), kernel/initramfs directories after their checksum, and the BLS entry
depends only on the commit, the OS name and the kernel arguments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidConfigError
from ..run import run
from . import ostree, ostree_output
from .bls import BlsEntry, check_boot_relative, read_entries

log = logging.getLogger("imagebuilder.ostree.deploy")

IGNITION_FIRSTBOOT = "$ignition_firstboot"
DEFAULT_CONSOLE = ("tty0", "ttyS0,115200n8")


@dataclass(frozen=True)
class DeployOptions:
    osname: str
    ref: str | None = None
    kernel_args: tuple[str, ...] = ()
    root: str = "LABEL=root"
    console: tuple[str, ...] = DEFAULT_CONSOLE
    ignition_firstboot: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "DeployOptions":
        return cls(osname=d["osname"], ref=d.get("ref"),
                   kernel_args=tuple(d.get("kernel_args", ())),
                   root=d.get("root", "LABEL=root"),
                   console=tuple(d.get("console", DEFAULT_CONSOLE)),
                   ignition_firstboot=bool(d.get("ignition_firstboot", True)))


@dataclass(frozen=True)
class DeployInfo:
    osname: str
    ref: str
    commit: str
    kargs: tuple[str, ...]
    deployment: str  # relative to root/
    entries: tuple[BlsEntry, ...]

    def to_record(self) -> dict:
        return {"osname": self.osname, "ref": self.ref, "commit": self.commit,
                "kargs": list(self.kargs), "deployment": self.deployment,
                "immutable": [self.deployment],
                "bls": [e.to_dict() for e in self.entries]}


def assemble_kargs(opts: DeployOptions) -> list[str]:
    """Kernel arguments for the deployment, in FCOS order.

    ``kernel_args`` as given; ``root=`` (default ``LABEL=root``) and ``rw`` are added in
    front when missing, ``console=`` entries when none is given, then the literal
    ``$ignition_firstboot`` that GRUB expands (FCOS's first-boot stamp logic).
    """
    kargs = list(opts.kernel_args)
    front: list[str] = []
    if not any(a.startswith("root=") for a in kargs):
        front.append(f"root={opts.root}")
    if "rw" not in kargs and "ro" not in kargs:
        front.append("rw")
    kargs = front + kargs
    if not any(a.startswith("console=") for a in kargs):
        kargs += [f"console={c}" for c in opts.console]
    if opts.ignition_firstboot and IGNITION_FIRSTBOOT not in kargs:
        kargs.append(IGNITION_FIRSTBOOT)
    for a in kargs:
        if not a or any(c.isspace() for c in a):
            raise InvalidConfigError(f"kernel argument {a!r} is empty or contains whitespace")
    return kargs


def read_commit_record(repo_tree: Path) -> dict:
    p = repo_tree / ".imagebuilder" / "ostree.json"
    if p.is_file():
        return json.loads(p.read_text())
    return {}


def _clear_immutable(path: Path) -> None:
    run(["chattr", "-i", path])


def _clean_repo_tmp(repo: Path) -> None:
    for leftover in (repo / "tmp").glob("*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_boot(path: Path) -> Iterator[Path]:
    """A tmpfs on ``path`` (the sysroot's /boot) for the duration of the deploy.

    ``ostree admin deploy`` ends with a FIFREEZE/FITHAW cycle on the filesystem holding
    /boot. On a plain directory that would freeze the build host's filesystem; on a
    tmpfs the ioctl is unsupported and ostree falls back to syncfs().
    """
    if path.is_symlink() or not path.is_dir():
        raise InvalidConfigError(f"{path}: expected a directory")
    if os.path.ismount(path):
        raise InvalidConfigError(f"{path}: already a mount point")
    run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "imagebuilder-boot", path])
    try:
        yield path
    finally:
        res = run(["umount", path], check=False)
        if res.returncode != 0:
            log.warning("umount %s failed; detaching lazily", path)
            run(["umount", "--lazy", path], check=False)


def deploy(repo_tree: Path, tree: Path, opts: DeployOptions) -> DeployInfo:
    """Deploy the commit from ``repo_tree/repo`` into ``tree/{root,boot,efi}``."""
    src_repo = repo_tree / "repo"
    if not (src_repo / "config").is_file():
        raise InvalidConfigError(f"{repo_tree}: no OSTree repository at repo/",
                                 hint="the input must be the tree of an ostree.commit stage")
    record = read_commit_record(repo_tree)
    ref = opts.ref or record.get("ref")
    if not ref:
        raise InvalidConfigError("no ref to deploy: set the deploy option 'ref'")
    commit = ostree_output("rev-parse", ref, repo=src_repo)
    if record.get("commit") and record.get("ref") == ref and record["commit"] != commit:
        raise InvalidConfigError(f"{src_repo}: {ref} is {commit}, the commit stage recorded {record['commit']}")

    root, boot, efi = tree / "root", tree / "boot", tree / "efi"
    for d in (root, boot):
        if d.exists() and any(d.iterdir()):
            raise InvalidConfigError(f"{d}: not empty; deploy needs a fresh sysroot tree")
    for d in (root, boot, efi):
        d.mkdir(mode=0o755, exist_ok=True)

    kargs = assemble_kargs(opts)
    sysroot_repo = root / "ostree/repo"
    ostree("admin", "init-fs", "--modern", root)
    ostree("admin", "os-init", f"--sysroot={root}", opts.osname)
    ostree("config", "set", "sysroot.bootloader", "none", repo=sysroot_repo)
    ostree("config", "set", "sysroot.readonly", "false", repo=sysroot_repo)
    log.info("pulling %s (%s) into the sysroot repository", ref, commit)
    ostree("pull-local", src_repo, ref, repo=sysroot_repo)
    with scratch_boot(root / "boot") as scratch:
        ostree("admin", "deploy", f"--sysroot={root}", f"--os={opts.osname}", "--karg-none",
               *(f"--karg-append={a}" for a in kargs), ref)
        # the boot partition's contents -> boot/; root/boot stays as the empty mount point
        run(["cp", "-a", f"{scratch}/.", f"{boot}/"])

    deployment = f"ostree/deploy/{opts.osname}/deploy/{commit}.0"
    if not (root / deployment).is_dir():
        raise InvalidConfigError(f"ostree admin deploy did not create {deployment}")
    _clear_immutable(root / deployment)
    _clean_repo_tmp(sysroot_repo)

    entries = read_entries(boot)
    if not entries:
        raise InvalidConfigError(f"ostree admin deploy wrote no BLS entry under {boot}/loader/entries")
    for e in entries:
        check_boot_relative(e, boot)
    log.info("deployed %s as %s (%d boot entr%s)", commit, deployment, len(entries),
             "y" if len(entries) == 1 else "ies")
    return DeployInfo(osname=opts.osname, ref=ref, commit=commit, kargs=tuple(kargs),
                      deployment=deployment, entries=tuple(entries))
