"""Commit a prepared tree into an OSTree repository, deterministically.

The commit checksum covers the tree's content, ownership, modes and xattrs (not
mtimes), plus the commit metadata. To make it a function of the tree alone we fix
everything else: ``--timestamp`` from ``SOURCE_DATE_EPOCH``, no parent (a fresh
repository, ``--parent=none``), a fixed subject and ref (the ref is bound into the
commit unless ``bindings`` is off) and ``version`` metadata from the options.

Repository mode: ``bare-user`` by default — no compression (fast: an 800 MiB tree
commits in seconds), works without root (ownership is kept in a user xattr) and
``pull-local`` into a ``bare`` sysroot repository reads it; ``archive`` (zlib, slower,
servable over HTTP) and ``bare`` are available.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidConfigError, ToolError
from . import ostree, ostree_output

log = logging.getLogger("imagebuilder.ostree.commit")

MODES = ("bare-user", "archive", "bare")
# never part of a commit: the engine's per-tree records
SKIP = ("/.imagebuilder",)


@dataclass(frozen=True)
class CommitOptions:
    ref: str
    version: str | None = None
    subject: str | None = None
    mode: str = "bare-user"
    bindings: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "CommitOptions":
        return cls(ref=d["ref"], version=d.get("version"), subject=d.get("subject"),
                   mode=d.get("mode", "bare-user"), bindings=bool(d.get("bindings", True)))


@dataclass(frozen=True)
class CommitInfo:
    ref: str
    commit: str
    version: str | None
    timestamp: int

    def to_record(self) -> dict:
        return {"ref": self.ref, "commit": self.commit, "version": self.version,
                "timestamp": self.timestamp}


def iso_timestamp(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def init_repo(repo: Path, mode: str) -> None:
    if mode not in MODES:
        raise InvalidConfigError(f"repository mode {mode!r}: expected one of {', '.join(MODES)}")
    if (repo / "config").exists():
        raise InvalidConfigError(f"{repo}: repository already exists; commits need a fresh one")
    repo.mkdir(parents=True, exist_ok=True)
    ostree("init", f"--mode={mode}", repo=repo)


def commit_tree(tree: Path, repo: Path, opts: CommitOptions, epoch: int) -> CommitInfo:
    """Create ``repo`` (fresh) and commit ``tree`` on ``opts.ref``."""
    if not (tree / "usr").is_dir():
        raise InvalidConfigError(f"{tree}: not a root filesystem (no /usr)")
    if (tree / "etc").exists() or not (tree / "usr/etc").is_dir():
        raise InvalidConfigError(f"{tree}: not prepared for OSTree (needs /usr/etc and no /etc)",
                                 hint="run the org.imagebuilder.ostree.prepare stage first")
    init_repo(repo, opts.mode)
    subject = opts.subject or (f"{opts.ref} {opts.version}" if opts.version else opts.ref)
    argv: list[str] = [
        "commit", f"--branch={opts.ref}", "--parent=none", f"--subject={subject}",
        f"--timestamp={iso_timestamp(epoch)}", f"--tree=dir={tree}", "--fsync=false",
    ]
    if opts.version:
        argv.append(f"--add-metadata-string=version={opts.version}")
    if not opts.bindings:
        argv.append("--no-bindings")
    skips = [p for p in SKIP if (tree / p.lstrip("/")).exists()]  # ostree rejects unmatched entries
    with tempfile.NamedTemporaryFile("w", prefix="skip-list.", suffix=".txt") as skip:
        if skips:
            skip.write("".join(f"{p}\n" for p in skips))
            skip.flush()
            argv.append(f"--skip-list={skip.name}")
        checksum = ostree_output(*argv, repo=repo)
    if len(checksum) != 64:
        raise InvalidConfigError(f"ostree commit printed {checksum!r}, expected a checksum")
    # keep the repository free of leftovers from the transaction
    for leftover in (repo / "tmp").glob("*"):
        if leftover.name != "cache":
            _rm(leftover)
    log.info("committed %s on %s", checksum, opts.ref)
    return CommitInfo(ref=opts.ref, commit=checksum, version=opts.version, timestamp=epoch)


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def rev_parse(repo: Path, ref: str) -> str:
    return ostree_output("rev-parse", ref, repo=repo)


def commit_version(repo: Path, commit: str) -> str | None:
    """The ``version`` metadata of a commit, or None."""
    try:
        out = ostree_output("show", "--print-metadata-key=version", commit, repo=repo)
    except ToolError:
        return None
    if len(out) >= 2 and out[0] == out[-1] == "'":
        return out[1:-1]
    return out or None

