"""Initrd reading (coreos-installer's initrd fixtures) and deterministic writing."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from pathlib import Path

import pytest

from imagebuilder.iso.cpio import (InitrdError, Member, initrd_extent, newc_archive, read_initrd,
                                   write_initrd, xz_compress)


def _initrd(shared_fixtures: Path, name: str) -> bytes:
    p = shared_fixtures / "initrd" / name
    data = p.read_bytes()
    return lzma.decompress(data) if name.endswith(".xz") else data


def _entries(archive: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, ino, mode, nlink, mtime) of every header, parsed independently of the reader."""
    out, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701"
        f = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = archive[pos + 110:pos + 110 + namesize - 1].decode()
        out.append((name, f[0], f[1], f[4], f[5]))
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        pos += filesize + (4 - filesize % 4) % 4
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return out


def test_compressed_archives(shared_fixtures):
    members = read_initrd(_initrd(shared_fixtures, "compressed.img.xz"))
    expected = {f"{k}/{w}": f"{w.upper()}\n".encode()
                for k in ("uncompressed-1", "uncompressed-2", "gzip", "xz", "zstd")
                for w in ("hello", "world")}
    assert {p: m.data for p, m in members.items()} == expected


def test_redundant_last_copy_wins(shared_fixtures):
    assert read_initrd(_initrd(shared_fixtures, "redundant.img.xz"))["data/file"].data == b"third\n"


def test_padded_names(shared_fixtures):
    members = read_initrd(_initrd(shared_fixtures, "padded-names.img.xz"))
    assert {p: m.data for p, m in members.items()} == {"dir/hello": b"z" * 5000,
                                                       "dir/world": b"q" * 4500}


@pytest.mark.parametrize("name,path", [("traversal-absolute.img", "/etc/adjtime"),
                                       ("traversal-relative.img", "../f")])
def test_traversal_rejected(shared_fixtures, name, path):
    with pytest.raises(InitrdError, match="path traversal") as ei:
        read_initrd(_initrd(shared_fixtures, name))
    assert path in str(ei.value)


def test_write_layout_matches_coreos_installer():
    m = {p: Member(b"") for p in ["c/f", "c/a/b/d/f", "d", "c/g", "c/a/c/f", "a/b/c/d/e/f"]}
    archive = newc_archive(m)
    entries = _entries(archive)
    assert [(n, mode >> 12 == 0o04) for n, _, mode, _, _ in entries[:-1]] == [
        ("a", True), ("a/b", True), ("a/b/c", True), ("a/b/c/d", True), ("a/b/c/d/e", True),
        ("a/b/c/d/e/f", False), ("c", True), ("c/a", True), ("c/a/b", True), ("c/a/b/d", True),
        ("c/a/b/d/f", False), ("c/a/c", True), ("c/a/c/f", False), ("c/f", False), ("c/g", False),
        ("d", False)]
    for i, (name, ino, mode, nlink, mtime) in enumerate(entries[:-1]):
        assert ino == i and nlink == 1 and mtime == 0
        assert mode in (0o040755, 0o100600)
    assert entries[-1] == ("TRAILER!!!", 0, 0, 1, 0)
    # lowercase hex only
    header_hex = archive[6:110]
    assert header_hex == header_hex.lower()
    # GNU cpio agrees
    listing = subprocess.run(["cpio", "-it"], input=archive, capture_output=True, check=True)
    assert listing.stdout.decode().split() == [e[0] for e in entries[:-1]]


def test_write_is_deterministic_xz_crc32_preset9():
    m = {"config.ign": Member(b'{"ignition":{"version":"3.3.0"}}\n'),
         "etc/coreos-firstboot-network/eth0.nmconnection": Member(b"[connection]\n", 0o100600)}
    a, b = write_initrd(m), write_initrd(dict(reversed(m.items())))
    assert a == b
    assert a[:6] == b"\xfd7zXZ\x00"
    assert a[6:8] == b"\x00\x01"  # stream flags: check type CRC32
    assert a == lzma.compress(newc_archive(m), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                              preset=9)
    assert xz_compress(b"x") == lzma.compress(b"x", format=lzma.FORMAT_XZ,
                                              check=lzma.CHECK_CRC32, preset=9)
    # the xz CLI can verify it
    subprocess.run(["xz", "-t"], input=a, check=True)
    assert write_initrd({}) == b""


def test_roundtrip_with_modes_and_padding():
    m = {"a/x": Member(b"1", 0o100644), "b": Member(b"22"), "config.ign": Member(b"{}")}
    data = write_initrd(m) + b"\0" * 1000
    back = read_initrd(data)
    assert back == {"a/x": Member(b"1", 0o100644), "b": Member(b"22", 0o100600),
                    "config.ign": Member(b"{}", 0o100600)}
    assert initrd_extent(data) == len(data) - 1000


def test_concatenated_gzip_and_plain_archives():
    first = gzip.compress(newc_archive({"a": Member(b"old")}), mtime=0)
    second = newc_archive({"a": Member(b"new"), "b": Member(b"b")})
    data = first + b"\0" * 7 + second + b"\0" * 100
    assert {p: m.data for p, m in read_initrd(data).items()} == {"a": b"new", "b": b"b"}
    assert initrd_extent(data) == len(first) + 7 + len(second)


def test_garbage_rejected():
    good = newc_archive({"a": Member(b"x")})
    with pytest.raises(InitrdError, match="unrecognized data"):
        read_initrd(good + b"garbage")
    with pytest.raises(InitrdError, match="trailing garbage"):
        read_initrd(xz_compress(good + b"junk"))
    with pytest.raises(InitrdError):
        read_initrd(xz_compress(good)[:-10])
    with pytest.raises(InitrdError):
        read_initrd(good[:50])
    with pytest.raises(InitrdError, match="path traversal"):
        newc_archive({"/abs": Member(b"")})


@pytest.mark.parametrize("size", [0, 1, 333, 70_000, 1_500_000])
def test_xz_compress_is_exactly_lzma_preset9(size, monkeypatch):
    """The arena-backed encoder must give lzma.compress(preset=9, CRC32)'s exact bytes."""
    import random

    from imagebuilder.iso import cpio

    rnd = random.Random(size)
    data = bytes(rnd.getrandbits(8) for _ in range(size // 3)) + b"ignition " * (size // 13)
    expected = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)
    assert cpio._arena_xz() is not None  # liblzma is there on every supported system
    assert xz_compress(data) == expected
    monkeypatch.setattr(cpio, "_arena_xz", lambda: None)  # the plain fallback agrees
    assert xz_compress(data) == expected
