"""The initrds we write, read by the real tools: GNU cpio and xz."""

from __future__ import annotations

import subprocess

from imagebuilder.iso.cpio import Member, newc_archive, write_initrd


def test_gnu_cpio_lists_our_archive_in_order():
    m = {p: Member(b"") for p in ["c/f", "c/a/b/d/f", "d", "c/g", "c/a/c/f", "a/b/c/d/e/f"]}
    listing = subprocess.run(["cpio", "-it"], input=newc_archive(m), capture_output=True,
                             check=True)
    assert listing.stdout.decode().split() == [
        "a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f", "c", "c/a", "c/a/b",
        "c/a/b/d", "c/a/b/d/f", "c/a/c", "c/a/c/f", "c/f", "c/g", "d"]


def test_xz_verifies_our_initrd():
    a = write_initrd({"config.ign": Member(b'{"ignition":{"version":"3.3.0"}}\n')})
    subprocess.run(["xz", "-t"], input=a, check=True)
