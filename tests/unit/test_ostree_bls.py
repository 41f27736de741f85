"""BLS entry parsing/formatting as ostree writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ostree.bls import check_boot_relative, format_entry, parse_entry, read_entries

ENTRY = """\
title Debian GNU/Linux 12 (bookworm) 1.0 (ostree:0)
version 1
options root=LABEL=root rw console=ttyS0,115200n8 $ignition_firstboot ostree=/ostree/boot.1/debian/abc/0
linux /ostree/debian-abc/vmlinuz-6.1.0-50-amd64
initrd /ostree/debian-abc/initramfs-6.1.0-50-amd64.img
"""


def test_parse_and_format_round_trip() -> None:
    e = parse_entry(ENTRY, "ostree-1-debian.conf")
    assert e.version == "1" and e.linux == "/ostree/debian-abc/vmlinuz-6.1.0-50-amd64"
    assert e.initrd == ("/ostree/debian-abc/initramfs-6.1.0-50-amd64.img",)
    assert "$ignition_firstboot" in e.kargs
    assert e.ostree_target == "/ostree/boot.1/debian/abc/0"
    assert format_entry(e) == ENTRY
    assert e.to_dict()["initrd"] == list(e.initrd)


def test_unknown_keys_kept_and_missing_linux_rejected() -> None:
    e = parse_entry(ENTRY + "devicetree /x.dtb\n", "x.conf")
    assert e.extra == {"devicetree": "/x.dtb"}
    with pytest.raises(InvalidConfigError, match="no 'linux'"):
        parse_entry("title x\n", "bad.conf")


def test_read_entries_newest_first(tmp_path: Path) -> None:
    d = tmp_path / "loader/entries"
    d.mkdir(parents=True)
    (d / "ostree-1-debian.conf").write_text(ENTRY)
    (d / "ostree-2-debian.conf").write_text(ENTRY.replace("version 1", "version 2"))
    assert [e.version for e in read_entries(tmp_path)] == ["2", "1"]
    assert read_entries(tmp_path / "nothing") == []


def test_check_boot_relative(tmp_path: Path) -> None:
    e = parse_entry(ENTRY, "e.conf")
    with pytest.raises(InvalidConfigError, match="not found"):
        check_boot_relative(e, tmp_path)
    (tmp_path / "ostree/debian-abc").mkdir(parents=True)
    (tmp_path / "ostree/debian-abc/vmlinuz-6.1.0-50-amd64").write_bytes(b"k")
    (tmp_path / "ostree/debian-abc/initramfs-6.1.0-50-amd64.img").write_bytes(b"i")
    check_boot_relative(e, tmp_path)
    prefixed = parse_entry(ENTRY.replace("linux /ostree", "linux /boot/ostree"), "p.conf")
    with pytest.raises(InvalidConfigError, match="not relative to the boot partition"):
        check_boot_relative(prefixed, tmp_path)
