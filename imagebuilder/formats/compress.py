"""Whole-file compression of an artifact (``compress: none|gzip|xz|zstd``) for formats
that have none of their own: raw, qcow2, vhd. vmdk (stream-optimized), gce (gzip) and ova
(holding a stream-optimized vmdk) are refused.

Deterministic flags, pinned so the bytes do not depend on the host's core count or the
environment: ``pigz -n -6`` (no name/time stamp; independent of its thread count),
``xz -6 --threads=2 --block-size=64MiB --check=crc64`` (multi-threaded xz output depends on
the block size, not on the threads, once in threaded mode; ``--threads=2`` keeps it there
even on one core), ``zstd -10 --threads=2`` (zstd's multi-threaded output depends on the
level and window, not the thread count). The uncompressed sha256 is recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidConfigError
from ..run import require, run
from .common import Artifact, named_temp_output, sha256_file

METHODS = ("none", "gzip", "xz", "zstd")
COMPRESSIBLE = ("raw", "qcow2", "vhd")
OWN_COMPRESSION = {"vmdk": "stream-optimized VMDK compresses its grains itself",
                   "gce": "the GCE tarball is gzip-compressed already",
                   "ova": "an OVA holds a stream-optimized (compressed) VMDK"}
SUFFIX = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}
_ENV = {"PIGZ": "", "XZ_DEFAULTS": "", "XZ_OPT": "", "ZSTD_CLEVEL": "", "ZSTD_NBTHREADS": ""}


def check(fmt: str, method: str, where: str = "compress") -> None:
    """Refuse an unknown method or a format that should not be compressed again."""
    if method not in METHODS:
        raise InvalidConfigError(f"{where}: {method!r} is not one of {', '.join(METHODS)}")
    if method == "none":
        return
    if fmt in OWN_COMPRESSION:
        raise InvalidConfigError(f"{where}: {method} cannot be applied to {fmt}: {OWN_COMPRESSION[fmt]}",
                                 hint=f"compress applies to {', '.join(COMPRESSIBLE)}")
    if fmt not in COMPRESSIBLE:
        raise InvalidConfigError(f"{where}: {method} is only offered for {', '.join(COMPRESSIBLE)}, not {fmt}")


def argv(method: str) -> list[str]:
    if method == "gzip":
        return ["pigz", "-n", "-6", "-c"]
    if method == "xz":
        return ["xz", "-6", "--threads=2", "--block-size=64MiB", "--check=crc64", "-c"]
    if method == "zstd":
        return ["zstd", "-10", "--threads=2", "-q", "-c", "--no-progress"]
    raise InvalidConfigError(f"compress: {method!r} is not one of {', '.join(METHODS)}")


def compress(artifact: Artifact, method: str, *, dest: str | os.PathLike[str] | None = None,
             force: bool = False, keep: bool = False) -> Artifact:
    """Compress ``artifact`` into ``dest`` (default: its path + .gz/.xz/.zst); the
    uncompressed file is removed unless ``keep``. Returns the compressed artifact."""
    check(artifact.format, method)
    if method == "none":
        return artifact
    src = artifact.path
    dest = Path(dest) if dest is not None else src.with_name(src.name + SUFFIX[method])
    cmd = argv(method)
    require(cmd[0])
    digest = sha256_file(src)
    with named_temp_output(dest, force=force) as tmp, open(tmp, "wb") as out:
        run([*cmd, str(src)], stdout=out, env=_ENV)
    if not keep:
        src.unlink()
    return Artifact(dest, artifact.format, artifact.virtual_size, patched=list(artifact.patched),
                    uncompressed_sha256=digest, compression=method)
