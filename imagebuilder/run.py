"""The only place imagebuilder starts external programs.

``run()`` logs the shell-quoted argv (visible with ``-v``), captures stderr and
raises :class:`~imagebuilder.errors.ToolError` carrying it when the program
fails. ``require()`` checks tools up front and says which Debian package
provides a missing one.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ToolError, ToolMissingError

log = logging.getLogger("imagebuilder.run")

# tool name -> Debian package that ships it (used in "tool missing" hints)
TOOL_PACKAGES: dict[str, str] = {
    "ostree": "ostree",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "xorriso": "xorriso",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "mtype": "mtools",
    "mkfs.vfat": "dosfstools",
    "fsck.vfat": "dosfstools",
    "mkfs.ext4": "e2fsprogs",
    "fsck.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_repair": "xfsprogs",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "sgdisk": "gdisk",
    "parted": "parted",
    "partx": "util-linux",
    "losetup": "mount",
    "cryptsetup": "cryptsetup-bin",
    "grub-mkimage": "grub-common",
    "grub-mkrescue": "grub-common",
    "mmdebstrap": "mmdebstrap",
    "busybox": "busybox-static",
    "xz": "xz-utils",
    "zstd": "zstd",
    "gzip": "gzip",
    "pigz": "pigz",
    "tar": "tar",
    "qemu-io": "qemu-utils",
    "cpio": "cpio",
    "buildah": "buildah",
    "ignition-validate": "ignition",
    "dracut": "dracut",
    "virt-customize": "libguestfs-tools",
    "guestfish": "libguestfs-tools",
    "unshare": "util-linux",
    "skopeo": "skopeo",
    "ssh-keygen": "openssh-client",
    "tar": "tar",
}


def tool_package(tool: str) -> str | None:
    return TOOL_PACKAGES.get(os.path.basename(tool))


def which(tool: str) -> str | None:
    """Find a tool on PATH, also looking in the sbin directories a non-root PATH may lack."""
    if os.sep in tool:
        return tool if os.access(tool, os.X_OK) else None
    found = shutil.which(tool)
    if found:
        return found
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(tool, path=extra)


def require(*tools: str) -> None:
    """Raise ToolMissingError naming every missing tool and its package."""
    missing = [t for t in tools if which(t) is None]
    if not missing:
        return
    pkgs = sorted({tool_package(t) or "?" for t in missing})
    raise ToolMissingError(
        f"required tool{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}",
        hint=f"install with: apt-get install {' '.join(p for p in pkgs if p != '?')}".rstrip(),
    )


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | str | None = None,
    capture: bool = True,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout=None,
    timeout: float | None = None,
    text: bool = False,
) -> subprocess.CompletedProcess:
    """Run a program; log its argv; raise ToolError with stderr on failure.

    ``capture``: capture stdout and stderr (returned on the CompletedProcess).
    Without it, stdout/stderr go to ours, unless ``stdout`` is given.
    ``env``: extra variables on top of os.environ.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run() needs a program")
    exe = which(args[0])
    if exe is None:
        pkg = tool_package(args[0])
        raise ToolMissingError(
            f"required tool not found: {args[0]}",
            hint=f"install with: apt-get install {pkg}" if pkg else None,
        )
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    log.info("$ %s", shlex.join(args))
    if isinstance(input, str) and not text:
        input = input.encode()
    try:
        proc = subprocess.run(
            [exe, *args[1:]],
            input=input,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if capture else None,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            text=text,
            stdin=subprocess.DEVNULL if input is None else None,
        )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"{args[0]} timed out after {timeout} s", argv=args) from e
    if check and proc.returncode != 0:
        err = proc.stderr if proc.stderr is not None else ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        last = err.strip().splitlines()[-1] if err.strip() else ""
        raise ToolError(
            f"{os.path.basename(args[0])} failed with exit status {proc.returncode}"
            + (f": {last}" if last else ""),
            argv=args, returncode=proc.returncode, stderr=err,
        )
    return proc


def output(argv: Sequence[str | os.PathLike[str]], **kw) -> str:
    """run() and return stdout as text."""
    return run(argv, text=True, **kw).stdout


def tool_version(tool: str) -> str | None:
    """First line of ``TOOL --version`` (for meta.json), or None if absent."""
    if which(tool) is None:
        return None
    try:
        proc = subprocess.run([which(tool), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None


def data_path(*parts: str) -> Path:
    """Path to a file under imagebuilder/data."""
    return Path(__file__).parent.joinpath("data", *parts)
