"""Embed-area location on every fixture generation, legacy fallbacks, kargs editing."""

from __future__ import annotations

import functools
import lzma
from pathlib import Path

import pycdlib
import pytest

from imagebuilder.errors import BadImageError
from imagebuilder.kargs import KargError
from imagebuilder.iso.areas import (AreaSource, locate_ignition_area, locate_kargs_areas,
                                    read_features)
from imagebuilder.iso.iso9660 import open_iso
from imagebuilder.iso.kargs import KargsTooLarge, format_area, modify_kargs, parse_area

FIXTURES = ["embed-areas-2021-01.iso.xz", "embed-areas-2021-12.iso.xz",
            "embed-areas-2022-09.iso.xz", "embed-areas-2023-03.x86_64.iso.xz",
            "embed-areas-2023-03.s390x.iso.xz"]

# (ignition offset, source, kargs source or None, kargs offsets, size, default prefix, network)
EXPECTED = {
    "embed-areas-2021-01.iso.xz": (96256, AreaSource.IGNITION_IMG, AreaSource.LEGACY_HEADER,
                                   [94026, 365415], 1131, "random.trust_cpu=on", False),
    "embed-areas-2021-12.iso.xz": (161792, AreaSource.IGNITION_IMG, AreaSource.KARGS_JSON,
                                   [139086, 431050], 1139, "mitigations=auto,nosmt", True),
    "embed-areas-2022-09.iso.xz": (159744, AreaSource.IGNITION_IMG, AreaSource.KARGS_JSON,
                                   [137038, 429002], 1139, "mitigations=auto,nosmt", True),
    "embed-areas-2023-03.x86_64.iso.xz": (157696, AreaSource.IGNINFO_JSON, AreaSource.KARGS_JSON,
                                          [427853, 431050], 1139, "mitigations=auto,nosmt", True),
    "embed-areas-2023-03.s390x.iso.xz": (203776, AreaSource.IGNINFO_JSON, None, [], 0, "", True),
}


@functools.cache
def _fixture_bytes(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def iso_path(shared_fixtures: Path, name: str, tmp_path: Path, data: bytes | None = None) -> Path:
    dest = tmp_path / name.removesuffix(".xz")
    dest.write_bytes(data if data is not None else _fixture_bytes(shared_fixtures / "iso" / name))
    return dest


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


@pytest.mark.parametrize("name", FIXTURES)
def test_areas_per_generation(shared_fixtures, tmp_path, name):
    ign_off, ign_src, k_src, k_offs, k_size, k_default, network = EXPECTED[name]
    with open_iso(iso_path(shared_fixtures, name, tmp_path)) as fs:
        area = locate_ignition_area(fs)
        assert (area.offset, area.length, area.source) == (ign_off, 262144, ign_src)
        found = locate_kargs_areas(fs)
        if k_src is None:
            assert found is None
        else:
            areas, current, problem = found
            assert problem is None
            assert areas.source == k_src and areas.size == k_size
            assert [r.offset for r in areas.regions] == k_offs
            assert areas.default.startswith(k_default) and current == areas.default
        assert read_features(fs).live_initrd_network is network


@pytest.mark.parametrize("name", [n for n in FIXTURES if "s390x" not in n])
def test_offsets_agree_with_pycdlib(shared_fixtures, tmp_path, name):
    path = iso_path(shared_fixtures, name, tmp_path)
    p = pycdlib.PyCdlib()
    p.open(str(path))
    try:
        ign = p.get_record(iso_path="/IMAGES/IGNITION.IMG;1").extent_location() * 2048
    finally:
        p.close()
    with open_iso(path) as fs:
        assert locate_ignition_area(fs).offset == ign


def test_s390x_area_inside_cdboot(shared_fixtures, tmp_path):
    with open_iso(iso_path(shared_fixtures, "embed-areas-2023-03.s390x.iso.xz", tmp_path)) as fs:
        cdboot = fs.lookup_file("IMAGES/CDBOOT.IMG")
        area = locate_ignition_area(fs)
        assert area.offset == cdboot.offset + 132096 and area.file == "images/cdboot.img"
        assert area.offset + area.length <= cdboot.offset + cdboot.size


def test_legacy_coreiso_header_fallback(shared_fixtures, tmp_path):
    name = "embed-areas-2021-01.iso.xz"
    data = _fixture_bytes(shared_fixtures / "iso" / name)
    pos = data.index(b"IGNITION.IMG;1")
    broken = _patch(data, pos, b"IGNITIOX")  # hide images/ignition.img from the lookup
    with open_iso(iso_path(shared_fixtures, name, tmp_path, broken)) as fs:
        area = locate_ignition_area(fs)
        assert (area.offset, area.length, area.source) == (96256, 262144, AreaSource.LEGACY_HEADER)
    no_header = _patch(broken, 32744, b"\0" * 8)
    with open_iso(iso_path(shared_fixtures, name, tmp_path, no_header)) as fs:
        with pytest.raises(BadImageError, match="Unrecognized CoreOS ISO image"):
            locate_ignition_area(fs)


def test_kargs_json_then_legacy_header_then_none(shared_fixtures, tmp_path):
    name = "embed-areas-2021-12.iso.xz"
    data = _fixture_bytes(shared_fixtures / "iso" / name)
    pos = data.index(b"KARGS.JSO;1")
    legacy_only = _patch(data, pos, b"KARGX")
    with open_iso(iso_path(shared_fixtures, name, tmp_path, legacy_only)) as fs:
        areas, current, problem = locate_kargs_areas(fs)
        assert problem is None
        assert areas.source == AreaSource.LEGACY_HEADER
        assert [r.offset for r in areas.regions] == [139086, 431050]
        assert areas.default == current and areas.size == 1139
    neither = _patch(legacy_only, 32672, b"\0" * 8)
    with open_iso(iso_path(shared_fixtures, name, tmp_path, neither)) as fs:
        assert locate_kargs_areas(fs) is None


def test_kargs_areas_must_agree(shared_fixtures, tmp_path):
    name = "embed-areas-2022-09.iso.xz"
    data = _fixture_bytes(shared_fixtures / "iso" / name)
    broken = _patch(data, 429002, b"console=ttyS0 ")
    with open_iso(iso_path(shared_fixtures, name, tmp_path, broken)) as fs:
        areas, current, problem = locate_kargs_areas(fs)  # located (for a reset), not read
        assert current is None and "kargs don't match at all offsets" in problem
        assert [r.offset for r in areas.regions] == [137038, 429002]


def test_features(shared_fixtures, tmp_path):
    with open_iso(iso_path(shared_fixtures, "embed-areas-2022-09.iso.xz", tmp_path)) as fs:
        f = read_features(fs)
        assert f.present and f.installer_config and f.live_initrd_network
        assert f.installer_config_directives["console"] is True
    with open_iso(iso_path(shared_fixtures, "embed-areas-2021-01.iso.xz", tmp_path)) as fs:
        f = read_features(fs)
        assert not f.present and not f.live_initrd_network


# -- kargs editing (coreos-installer's KargsEditor test cases) --------------------------------
@pytest.mark.parametrize("orig,delete,expected", [
    ("foo bar foobar", ["foo"], "bar foobar"),
    ("foo bar foobar", ["bar"], "foo foobar"),
    ("foo bar foobar", ["foobar"], "foo bar"),
    ("foo bar foobar", ["bar", "foo"], "foobar"),
    ("foo=val bar baz=val", ["   foo=val"], "bar baz=val"),
    ("foo=val bar baz=val", ["baz=val  "], "foo=val bar"),
])
def test_delete(orig, delete, expected):
    assert modify_kargs(orig, delete=delete) == expected


def test_order_is_delete_append_replace():
    orig = "foo mitigations=auto,nosmt console=tty0 bar console=ttyS0,115200n8 baz"
    assert modify_kargs(orig, append=["console=ttyS1,115200n8"],
                        replace=["mitigations=auto,nosmt=auto"],
                        delete=["console=ttyS0,115200n8"]) == \
        "foo mitigations=auto console=tty0 bar baz console=ttyS1,115200n8"
    # an appended karg can be replaced in the same run (append happens first)
    assert modify_kargs("a", append=["x=1"], replace=["x=1=2"]) == "a x=2"
    with pytest.raises(KargError, match="KEY=OLD=NEW"):
        modify_kargs("a", replace=["x=1"])


def test_one_karg_model_semantics():
    """Deleting KEY drops every KEY/KEY=*, appends skip duplicates, one item is one argument."""
    assert modify_kargs("console=tty0 quiet console=ttyS0", delete=["console"]) == "quiet"
    assert modify_kargs("a b=1", append=["b=1", "c"]) == "a b=1 c"
    with pytest.raises(KargError, match="2 arguments where one is expected"):
        modify_kargs("foo bar foobar", delete=["foo bar"])


@pytest.mark.parametrize("kw", [{"delete": ["nosuch"]}, {"replace": ["nosuch=a=b"]},
                                {"delete": ["quiet=1"]}])
def test_missing_karg_is_an_error(kw):
    """coreos-installer silently does nothing here; we say so."""
    with pytest.raises(KargError, match="no such kernel argument") as ei:
        modify_kargs("quiet ro", source="live.iso", **kw)
    assert ei.value.message.startswith("live.iso: ")
    assert "present: quiet ro" in ei.value.hint


@pytest.mark.parametrize("karg", ["quiet\n initrd /images/evil.img", "a;reboot", "#x", "x=$HOME",
                                  'foo="bar', "x}", "$(reboot)", "it's", "a\\b", "x\0y",
                                  "x\x01", "a|b", "a&b", "<x", "x>"])
def test_injection_refused_in_kargs_areas(karg):
    """Whatever would change GRUB's reading of the shared kargs text is refused."""
    with pytest.raises(KargError) as ei:
        modify_kargs("quiet", append=[karg], source="live.iso")
    assert ei.value.message.startswith("live.iso") or "kernel argument" in ei.value.message
    assert len(ei.value.message) < 400


def test_area_format_and_limits():
    area = format_area("a b", size=10)
    assert area == b"a b\n######"
    assert parse_area(area) == "a b"
    assert parse_area(b"a b\0\0\0\0", pad="\0", end="\0") == "a b"
    assert len(format_area("x" * 9, size=10)) == 10  # size - 1 fits
    with pytest.raises(KargsTooLarge, match="kargs too large for area: 11 vs 10") as ei:
        format_area("x" * 10, size=10)
    assert "9 bytes" in ei.value.hint
    with pytest.raises(BadImageError):
        parse_area(b"\xff\xfe")
