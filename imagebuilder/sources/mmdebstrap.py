"""Debian root filesystems with mmdebstrap (root mode; the host's apt sources unless a mirror)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from ..run import require, run


@dataclass(frozen=True)
class MmdebstrapOptions:
    suite: str
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    components: tuple[str, ...] = ("main",)
    mirror: str | None = None


def argv(opts: MmdebstrapOptions, target: Path) -> list[str]:
    args = ["mmdebstrap", "--mode=root", f"--variant={opts.variant}"]
    if opts.components:
        args.append(f"--components={','.join(opts.components)}")
    if opts.packages:
        args.append(f"--include={','.join(opts.packages)}")
    args += [opts.suite, os.fspath(target)]
    if opts.mirror:
        args.append(opts.mirror)
    return args


def bootstrap(opts: MmdebstrapOptions, target: Path, *, source_epoch: int) -> None:
    """Create a root filesystem in target (which must be empty)."""
    require("mmdebstrap")
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise UserInputError(f"{target}: mmdebstrap needs an empty directory")
    run(argv(opts, target), capture=False,
        env={"SOURCE_DATE_EPOCH": str(source_epoch), "DEBIAN_FRONTEND": "noninteractive"})
