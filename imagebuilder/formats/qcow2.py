"""qcow2 (QEMU, OpenStack, KubeVirt, IBM Cloud, Nutanix ...): compat 1.1, virtual size =
the raw's size, optionally with QEMU's internal (zlib) cluster compression.

``qemu-img convert`` run sequentially gives the same bytes for the same raw, compressed
or not, so nothing needs patching.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import Artifact, check_limit, named_temp_output, qemu_img_convert, raw_size

FORMAT = "qcow2"
MAX_SIZE = None  # far beyond any disk we build (QEMU's own limit is 2^61 bytes)


def convert(raw: str | os.PathLike[str], dest: str | os.PathLike[str], *, compression: bool = False,
            force: bool = False) -> Artifact:
    raw, dest = Path(raw), Path(dest)
    size = raw_size(raw)
    check_limit(FORMAT, size, MAX_SIZE)
    with named_temp_output(dest, force=force) as tmp:
        qemu_img_convert(raw, tmp, "qcow2", {"compat": "1.1"}, compress=compression)
    return Artifact(dest, FORMAT, size)
