"""Initrd reading (coreos-installer's initrd fixtures) and deterministic writing."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from imagebuilder.iso import cpio
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


def _preset9(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)


@pytest.mark.parametrize("size", [0, 1, 333, 70_000, 1_500_000])
def test_xz_compress_is_exactly_lzma_preset9(size, monkeypatch):
    """The liblzma (calloc-allocator) encoder must give lzma.compress(preset=9, CRC32)'s exact bytes."""
    import random

    from imagebuilder.iso import cpio

    rnd = random.Random(size)
    data = bytes(rnd.getrandbits(8) for _ in range(size // 3)) + b"ignition " * (size // 13)
    expected = _preset9(data)
    assert cpio._liblzma_xz() is not None  # liblzma is there on every supported system
    assert xz_compress(data) == expected
    monkeypatch.setattr(cpio, "_liblzma_xz", lambda: None)  # the plain fallback agrees
    assert xz_compress(data) == expected


def _xz_corpus() -> list[tuple[str, bytes]]:
    """Many differently-shaped inputs: sizes 0..300 KiB, entropy from none to full."""
    import json
    import random

    rnd = random.Random(20261125)
    out: list[tuple[str, bytes]] = []
    to2 = bytes.maketrans(bytes(range(256)), b"\x00\x01" * 128)
    to4 = bytes.maketrans(bytes(range(256)), b"acgt" * 64)
    for n in (0, 1, 3, 4, 5, 64, 255, 1000, 4097, 20_000, 100_000, 262_144):
        out.append((f"random-{n}", rnd.randbytes(n)))
        out.append((f"zeros-{n}", b"\0" * n))
        out.append((f"alpha2-{n}", rnd.randbytes(n).translate(to2)))
        out.append((f"alpha4-{n}", rnd.randbytes(n).translate(to4)))
        out.append((f"period7-{n}", (b"abcdefg" * (n // 7 + 1))[:n]))
    for files in (0, 1, 3, 20, 200, 2000):
        cfg = {"ignition": {"version": "3.4.0"},
               "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [
                   "ssh-ed25519 " + rnd.randbytes(32).hex()]}]},
               "storage": {"files": [{"path": f"/etc/f{i}", "mode": 420, "contents": {
                   "source": f"data:,{rnd.randbytes(rnd.randint(0, 40)).hex()}"}}
                   for i in range(files)]}}
        raw = json.dumps(cfg).encode()
        out.append((f"ignition-{files}", raw))
        members = {"config.ign": Member(raw),
                   "etc/coreos-firstboot-network/eth0.nmconnection": Member(
                       b"[connection]\nid=eth0\ntype=ethernet\n[ipv4]\nmethod=auto\n")}
        out.append((f"initrd-{files}", newc_archive(members)))
    for i in range(12):  # mixtures: chunks of text, repeats and noise
        parts, n = [], 0
        limit = rnd.choice([2_000, 30_000, 200_000])
        while n < limit:
            k = rnd.randint(1, 6_000)
            kind = rnd.randrange(3)
            chunk = (rnd.randbytes(k) if kind == 0 else rnd.randbytes(k).translate(to4)
                     if kind == 1 else (parts[-1] if parts else b"q") * 2)
            parts.append(chunk[:k])
            n += len(parts[-1])
        out.append((f"mix-{i}", b"".join(parts)))
    return out


def test_xz_compress_matches_preset9_on_many_inputs():
    from imagebuilder.iso import cpio

    assert cpio._liblzma_xz() is not None
    corpus = _xz_corpus()
    assert len(corpus) > 80
    for name, data in corpus:
        ours = xz_compress(data)
        assert ours == _preset9(data), name
        if len(data) < 5000:
            assert xz_compress(data) == ours, name  # deterministic, call after call


def _collision_stress(n_records: int = 48) -> bytes:
    """An input on which preset 9 with a *smaller* dictionary finds a different match.

    48 records share the 4-byte prefix P and, oldest first, sort ever further below the
    final query, so the bt4 tree search for the query visits all 48 before it reaches the
    oldest record, the only long match: exactly preset 9's search depth (48). R hashes to
    P's bucket under the 2^17-entry table of a 256 KiB dictionary but not under the 2^24
    entries of 64 MiB; inserted just before the query it adds one node to the path, and
    with the small table the long match goes unfound.
    """
    import hashlib

    def junk(tag: bytes, n: int) -> bytes:
        raw = b"".join(hashlib.sha256(b"%s/%d" % (tag, i)).digest() for i in range(n // 32 + 1))
        return bytes(0x80 + b % 0x70 for b in raw[:n])

    p, a, r = b"\x10\x20\x30\x40", b"\x55", bytes.fromhex("f01881c3")
    l1 = junk(b"L1", 90)
    recs = [p + a + bytes([200 - i]) + (l1 if i == 1 else junk(b"b%d" % i, 90)) + junk(b"t%d" % i, 20)
            for i in range(1, n_records + 1)]
    query = p + a + bytes([199]) + l1[:80] + bytes([min(l1[80] + 1, 0xEF)]) + junk(b"q", 30)
    return b"".join(recs) + r + junk(b"r", 40) + query + junk(b"e", 50)


def _bt4_hash4(b: bytes, mask: int) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        table.append(c)
    return ((table[b[0]] ^ b[1] ^ (b[2] << 8)) ^ (table[b[3]] << 5)) & mask


def test_smaller_dictionary_is_not_byte_compatible():
    """Why xz_compress keeps the 64 MiB dictionary: a 256 KiB one (dict-size byte patched
    back to 64 MiB) gives different bytes on this 5.8 KiB input; 32 MiB (same 2^24 hash
    table) does not."""
    import zlib

    p, r = b"\x10\x20\x30\x40", bytes.fromhex("f01881c3")
    assert _bt4_hash4(p, (1 << 17) - 1) == _bt4_hash4(r, (1 << 17) - 1)
    assert _bt4_hash4(p, (1 << 24) - 1) != _bt4_hash4(r, (1 << 24) - 1)
    data = _collision_stress()

    def with_dict(d: int) -> bytes:
        c = bytearray(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": d}]))
        hsize = (c[12] + 1) * 4  # block header: size, flags, LZMA2 filter id 0x21, 1 props byte
        assert c[14:16] == b"\x21\x01"
        c[16] = 0x1C  # the props byte of a 64 MiB dictionary
        c[12 + hsize - 4:12 + hsize] = zlib.crc32(bytes(c[12:12 + hsize - 4])).to_bytes(4, "little")
        return bytes(c)

    expected = _preset9(data)
    assert expected[16] == 0x1C
    assert xz_compress(data) == expected
    assert with_dict(32 << 20) == expected
    assert with_dict(256 << 10) != expected
    assert lzma.decompress(with_dict(256 << 10)) == data  # valid, just not the same bytes


# --- bounded, streamed reading ------------------------------------------------------------

def _bombs():
    import bombs

    return bombs


@pytest.mark.parametrize("kind", ["xz", "gzip"])
def test_expansion_limit(kind, tmp_path):
    b = _bombs()
    make = b.xz_bomb if kind == "xz" else b.gzip_bomb
    data = make(b.newc_header("usr/big", 40 << 20), 40 << 20, b"\0" * 0 + b.trailer())
    scan = cpio.scan_initrd(data, limit=64 << 20, keep=lambda p: False)
    assert scan.names == {"usr/big"} and scan.members == {}  # streamed, not held
    with pytest.raises(cpio.InitrdTooBig, match="expands beyond the limit of 16 MiB"):
        cpio.scan_initrd(data, limit=16 << 20, keep=lambda p: False)
    with pytest.raises(cpio.InitrdTooBig, match="usr/big is 41943040 bytes, more than the limit"):
        cpio.read_initrd(data)  # keeps everything: the member alone is over 32 MiB
    f = tmp_path / "i.img"
    f.write_bytes(data + b"\0" * 100)
    with open(f, "rb") as fh:  # from a file: the same, and the extent excludes the padding
        assert cpio.scan_initrd(fh, limit=64 << 20, keep=lambda p: False).end == len(data)


def test_zstd_archives_stream_through_zstandard():
    import zstandard

    arc = newc_archive({"a": Member(b"hello"), "b/c": Member(b"x" * 100_000)})
    z = zstandard.ZstdCompressor(level=3).compress(arc)
    data = newc_archive({"first": Member(b"1")}) + z + b"\0" * 3
    members = read_initrd(data)
    assert members["a"].data == b"hello" and members["b/c"].data == b"x" * 100_000
    assert initrd_extent(data) == len(data) - 3
    with pytest.raises(InitrdError, match="truncated zstd frame"):
        read_initrd(z[:-5])
