"""OSTree: turn a root filesystem into an OSTree commit and deploy it into a sysroot.

Three steps, one module each, each driven by one stage in ``osbuild-stages/``:

- :mod:`.prepare` converts a plain root filesystem (mmdebstrap output, the tiny OS, ...)
  into the layout OSTree expects (kernel + initramfs in ``/usr/lib/modules/$KVER``,
  ``/usr/etc``, empty ``/var`` recreated by tmpfiles.d, FCOS-style symlinks);
- :mod:`.commit` commits that tree deterministically into a repository;
- :mod:`.deploy` deploys the commit into a sysroot split into the boot and root
  partition contents; :mod:`.bls` reads the Boot Loader Spec entries it writes.

All external programs (``ostree``, ``chroot``, ``dracut``, ``mount``) go through
:func:`imagebuilder.run.run`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..run import output, run

__all__ = ["ostree", "ostree_output"]


def _argv(args: tuple[str | os.PathLike[str], ...], repo: Path | None) -> list[str]:
    argv = ["ostree"]
    if repo is not None:
        argv.append(f"--repo={repo}")
    argv.extend(os.fspath(a) for a in args)
    return argv


def ostree(*args: str | os.PathLike[str], repo: Path | None = None) -> None:
    """Run ``ostree [--repo=REPO] ARGS...``; raise ToolError on failure."""
    run(_argv(args, repo))


def ostree_output(*args: str | os.PathLike[str], repo: Path | None = None) -> str:
    """Like :func:`ostree` but return stdout, stripped."""
    return output(_argv(args, repo)).strip()
