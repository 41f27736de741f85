"""The minimal ISO9660 reader, on coreos-installer's synthetic.iso and the s390x images."""

from __future__ import annotations

import functools
import lzma
from pathlib import Path

import pytest

from imagebuilder.errors import BadImageError, UserInputError
from imagebuilder.iso.iso9660 import IsoNotFound, normalize_name, open_iso


@functools.cache
def _fixture_bytes(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def iso_from_fixture(shared_fixtures: Path, name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name.removesuffix(".xz")
    dest.write_bytes(_fixture_bytes(shared_fixtures / "iso" / name))
    return dest


@pytest.fixture
def synthetic(shared_fixtures, tmp_path):
    with open_iso(iso_from_fixture(shared_fixtures, "synthetic.iso.xz", tmp_path)) as fs:
        yield fs


def test_primary_volume_descriptor(synthetic):
    assert synthetic.system_id == "system-ID-string"
    assert synthetic.volume_id == "volume-ID-string"
    assert synthetic.root.name == "."
    assert [d.name for d in synthetic.descriptors][0] == "primary"


def test_lookup_files_and_directories(synthetic):
    assert synthetic.lookup("/") == synthetic.root
    assert synthetic.lookup("").is_dir
    d = synthetic.lookup("./CONTENT")
    assert d.is_dir and d.name == "CONTENT"
    f = synthetic.lookup("CONTENT/FILE.TXT")
    assert not f.is_dir and f.size == 4
    # case-insensitive, version suffix and '..' handling
    assert synthetic.lookup("content/file.txt;1") == f
    assert synthetic.lookup("/a/../CONTENT/./DIR/../FILE.TXT") == f
    with pytest.raises(BadImageError):
        synthetic.lookup_file("CONTENT")


@pytest.mark.parametrize("path", ["MISSING", "MISSING/STUFF.TXT", "CONTENT/FILE.TXT/STUFF.TXT"])
def test_lookup_missing(synthetic, path):
    with pytest.raises(IsoNotFound):
        synthetic.lookup(path)
    assert synthetic.try_lookup(path) is None


def test_read_nested_file(synthetic):
    f = synthetic.lookup("REALLY/VERY/DEEPLY/NESTED/FILE.TXT")
    assert synthetic.read_file(f) == b"foo\n"
    assert synthetic.read_file(f, 1, 2) == b"oo"
    with pytest.raises(BadImageError):
        synthetic.read_file(f, 2, 5)


def test_list_dir_and_walk(synthetic):
    assert [e.name for e in synthetic.list_dir(synthetic.lookup("CONTENT"))] == ["DIR", "FILE.TXT"]
    names = sorted(p for p, _ in synthetic.walk())
    expected = ["CONTENT", "CONTENT/DIR", "CONTENT/DIR/SUBFILE.TXT", "CONTENT/FILE.TXT",
                "LARGEDIR", "NAMES", "NAMES/!\"%&'()*.+,-", "NAMES/:<=>?", "NAMES/ABC",
                "NAMES/ABC.D", "NAMES/ABC.DE", "NAMES/ABC.DEF", "NAMES/ABCDE000",
                "NAMES/ABCDEFGH", "NAMES/ABCDEFGH.I", "NAMES/ABCDEFGH.IJ", "NAMES/ABCDEFGH.IJK",
                "NAMES/ABCDEFGH.M", "NAMES/ABCDEFGH.MN", "NAMES/ABCDEFGH.MNO", "REALLY",
                "REALLY/VERY", "REALLY/VERY/DEEPLY", "REALLY/VERY/DEEPLY/NESTED",
                "REALLY/VERY/DEEPLY/NESTED/FILE.TXT"]
    expected += [f"LARGEDIR/{i}.DAT" for i in range(1, 151)]
    assert names == sorted(expected)
    # the 150-entry directory spans several sectors
    assert synthetic.lookup("LARGEDIR").size > 2048
    assert synthetic.read_file(synthetic.lookup("LARGEDIR/150.DAT")) != b""


def test_normalize_name():
    assert normalize_name("igninfo.jso;1") == "IGNINFO.JSO"
    assert normalize_name(b"ABC.;1") == "ABC"
    assert normalize_name("abc") == "ABC"


@pytest.mark.parametrize("name", ["embed-areas-2023-03.s390x.iso.xz"])
def test_s390x_root_with_0x00_parent_record(shared_fixtures, tmp_path, name):
    path = iso_from_fixture(shared_fixtures, name, tmp_path)
    root_sector = path.read_bytes()[16 * 2048 + 158:16 * 2048 + 162]
    with open_iso(path) as fs:
        assert fs.root.extent == int.from_bytes(root_sector, "little")
        names = [e.name for e in fs.list_dir(fs.root)]
        assert "" not in names and "\x00" not in names and "\x01" not in names
        assert {"COREOS", "IMAGES"} <= set(names)
        cdboot = fs.lookup_file("images/cdboot.img")
        assert cdboot.size == 394240


def test_incomplete_and_non_iso(shared_fixtures, tmp_path):
    path = iso_from_fixture(shared_fixtures, "embed-areas-2022-09.iso.xz", tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.iso"
    cut.write_bytes(data[:200 * 1024])
    with pytest.raises(BadImageError, match="incomplete"):
        open_iso(cut)
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\x01" * 40000)
    with pytest.raises(BadImageError, match="not an ISO9660"):
        open_iso(junk)
    tiny = tmp_path / "tiny.iso"
    tiny.write_bytes(b"x")
    with pytest.raises(BadImageError):
        open_iso(tiny)
    with pytest.raises(UserInputError):
        open_iso(tmp_path / "missing.iso")
