"""grub.cfg generation from BLS entries (no GRUB binaries needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagebuilder.boot.grub import (FIRSTBOOT_SNIPPET, SerialConfig, early_config, load_entries,
                                    parse_bls, render_grub_cfg, serial_from_console,
                                    serial_from_options, sort_entries, vercmp, write_grub_config,
                                    BlsEntry)
from imagebuilder.errors import InvalidConfigError

ENTRY = """\
title Debian GNU/Linux 12 (bookworm) proto.1 (ostree:0)
version 2
options root=LABEL=root rw console=tty0 console=ttyS0,115200n8 $ignition_firstboot ostree=/ostree/boot.1/debian/abc/0
linux /ostree/debian-abc/vmlinuz-6.1.0-50-amd64
initrd /ostree/debian-abc/initramfs-6.1.0-50-amd64.img
"""


def _boot(tmp_path: Path, entries: dict[str, str], symlink: bool = True) -> Path:
    boot = tmp_path / "boot"
    d = boot / ("loader.1" if symlink else "loader") / "entries"
    d.mkdir(parents=True)
    if symlink:
        os.symlink("loader.1", boot / "loader")
    for name, text in entries.items():
        (d / name).write_text(text)
    return boot


def test_parse_bls(tmp_path):
    p = tmp_path / "ostree-1-debian.conf"
    p.write_text("# comment\n" + ENTRY + "custom value\n")
    e = parse_bls(p)
    assert e.id == "ostree-1-debian"
    assert e.version == "2" and e.title.endswith("(ostree:0)")
    assert e.linux == "/ostree/debian-abc/vmlinuz-6.1.0-50-amd64"
    assert e.initrd == ("/ostree/debian-abc/initramfs-6.1.0-50-amd64.img",)
    assert "$ignition_firstboot" in e.options and e.extra == {"custom": "value"}


def test_parse_bls_needs_linux(tmp_path):
    p = tmp_path / "x.conf"
    p.write_text("title x\n")
    with pytest.raises(InvalidConfigError, match="linux"):
        parse_bls(p)


@pytest.mark.parametrize("a,b,want", [
    ("2", "1", 1), ("10", "9", 1), ("1.10", "1.9", 1), ("1.0", "1.0", 0), ("1.0a", "1.0", 1),
    ("1.0", "1.0.1", -1), ("2a", "2b", -1), ("1.1", "1.a", 1), ("", "1", -1),
])
def test_vercmp(a, b, want):
    assert vercmp(a, b) == want
    assert vercmp(b, a) == -want


def test_sort_newest_version_first():
    es = [BlsEntry("ostree-1.conf", version="1"), BlsEntry("ostree-2.conf", version="2"),
          BlsEntry("ostree-10.conf", version="10"), BlsEntry("b.conf", version="2")]
    assert [e.filename for e in sort_entries(es)] == [
        "ostree-10.conf", "ostree-2.conf", "b.conf", "ostree-1.conf"]


def test_render_has_fcos_firstboot_logic_and_entries(tmp_path):
    boot = _boot(tmp_path, {"ostree-1.conf": ENTRY.replace("version 2", "version 1")
                            .replace("proto.1", "old"), "ostree-2.conf": ENTRY})
    cfg = render_grub_cfg(load_entries(boot), timeout=5)
    assert 'if [ -f "/ignition.firstboot" ]; then' in cfg
    assert "set ignition_network_kcmdline=''" in cfg
    assert 'source "/ignition.firstboot"' in cfg
    assert 'set ignition_firstboot="ignition.firstboot ${ignition_network_kcmdline}"' in cfg
    assert "set timeout=5" in cfg
    assert "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1" in cfg
    assert "terminal_input serial console" in cfg and "terminal_output serial console" in cfg
    # newest first; kernel options passed verbatim so grub expands $ignition_firstboot
    first = cfg.index("menuentry 'Debian GNU/Linux 12 (bookworm) proto.1")
    assert first < cfg.index("menuentry 'Debian GNU/Linux 12 (bookworm) old")
    assert "  linux /ostree/debian-abc/vmlinuz-6.1.0-50-amd64 root=LABEL=root rw console=tty0 " \
           "console=ttyS0,115200n8 $ignition_firstboot ostree=/ostree/boot.1/debian/abc/0" in cfg
    assert "  initrd /ostree/debian-abc/initramfs-6.1.0-50-amd64.img" in cfg
    assert "--id 'ostree-2'" in cfg


def test_render_quotes_titles_and_network_kargs():
    e = BlsEntry("a.conf", title="it's", linux="/k")
    cfg = render_grub_cfg([e], serial=None, terminals=("console",),
                          firstboot_network_kargs="ip=dhcp rd.neednet=1")
    assert "menuentry 'it'\\''s'" in cfg
    assert "serial --" not in cfg and "terminal_output console" in cfg
    assert "set ignition_network_kcmdline='ip=dhcp rd.neednet=1'" in cfg
    assert FIRSTBOOT_SNIPPET.count("%s") == 1


def test_write_grub_config_and_stamp(tmp_path):
    boot = _boot(tmp_path, {"ostree-1.conf": ENTRY})
    p = write_grub_config(boot, firstboot=True)
    assert p == boot / "grub" / "grub.cfg" and "menuentry" in p.read_text()
    assert (boot / "ignition.firstboot").read_text() == ""
    write_grub_config(boot)  # not said: an existing stamp stays
    assert (boot / "ignition.firstboot").exists()
    write_grub_config(boot, firstboot=False)
    assert not (boot / "ignition.firstboot").exists()
    write_grub_config(boot)
    assert not (boot / "ignition.firstboot").exists()


def test_entries_missing_or_escaping_symlink(tmp_path):
    with pytest.raises(InvalidConfigError, match="no BLS entries"):
        load_entries(tmp_path)
    boot = tmp_path / "b"
    boot.mkdir()
    os.symlink("/etc", boot / "loader")
    with pytest.raises(InvalidConfigError, match="leaves the boot tree"):
        load_entries(boot)


def test_plain_loader_dir(tmp_path):
    boot = _boot(tmp_path, {"x.conf": ENTRY}, symlink=False)
    assert [e.id for e in load_entries(boot)] == ["x"]


@pytest.mark.parametrize("console,want", [
    (["tty0", "ttyS0,115200n8"], SerialConfig(0, 115200, 8, "no", 1)),
    (["ttyS1,9600e7"], SerialConfig(1, 9600, 7, "even", 1)),
    (["ttyS2"], SerialConfig(2, 115200, 8, "no", 1)),
    (["tty0"], None),
])
def test_serial_from_console(console, want):
    assert serial_from_console(console) == want


def test_serial_from_options():
    assert serial_from_options({}) == (SerialConfig(), ("serial", "console"))
    assert serial_from_options({"serial": False}) == (None, ("console",))
    assert serial_from_options({"console": ["tty0"]}) == (None, ("console",))
    s, t = serial_from_options({"serial": {"unit": 1, "speed": 9600}, "terminals": ["serial"]})
    assert s == SerialConfig(unit=1, speed=9600) and t == ("serial",)
    s, _ = serial_from_options({"console": ["ttyS1,57600n8"]})
    assert s == SerialConfig(unit=1, speed=57600)


def test_early_config_uuid_overrides_label_without_if():
    cfg = early_config("b77d6f73-b02c-48f0-b8bd-32854fd3e35b")
    # core.img runs the early config with GRUB's rescue parser: no scripting keywords
    assert not any(line.split()[0] in {"if", "fi", "then", "else"} for line in cfg.splitlines() if line.strip())
    assert "search --no-floppy --fs-uuid --set=bootfs b77d6f73-b02c-48f0-b8bd-32854fd3e35b" in cfg
    assert "search --no-floppy --label --set=bootfs boot" in cfg
    assert cfg.index("--label") < cfg.index("--fs-uuid")  # the UUID match wins
    assert "set prefix=($root)/grub" in cfg and "configfile ($root)/grub/grub.cfg" in cfg
    assert "--fs-uuid" not in early_config(None)
