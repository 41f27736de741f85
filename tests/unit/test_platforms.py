"""The platform table: the bundled data matches coreos-assembler's console rules, and the
loader rejects every kind of bad entry with the key's path."""

from __future__ import annotations

import copy

import pytest
import yaml

from imagebuilder.errors import InvalidConfigError
from imagebuilder.formats import FORMATS
from imagebuilder.platforms import check_size, get_platform, load_platforms, parse_platforms
from imagebuilder.run import data_path

SERIAL_LAST = ("console=tty0", "console=ttyS0,115200n8")
GRAPHICAL_LAST = ("console=ttyS0,115200n8", "console=tty0")


def bundled_doc() -> dict:
    return yaml.safe_load(data_path("platforms.yaml").read_text())


def test_bundled_table_console_order_and_ids():
    t = load_platforms()
    for name in ("aws", "azure", "gcp", "qemu", "ibmcloud"):
        assert t[name].kernel_arguments == SERIAL_LAST, name
    for name in ("openstack", "vmware", "virtualbox", "kubevirt"):
        assert t[name].kernel_arguments == GRAPHICAL_LAST, name
    assert t["packet"].kernel_arguments == ("console=ttyS1,115200n8",)
    assert t["packet"].grub_commands() == ["serial --unit=1 --speed=115200", "terminal_input serial",
                                           "terminal_output serial"]
    assert t["azure"].grub_commands() == []  # console only: Azure mirrors it to the serial log
    assert t["qemu"].grub_commands()[1] == "terminal_input serial console"
    assert t["metal"].kernel_arguments == () and t["metal"].ignition_id == "metal"
    assert t["metal4k"].ignition_id == "metal" and t["metal4k"].sector_size == 4096
    assert t["qemu"].consoles == ("tty0", "ttyS0,115200n8")
    assert t["aws"].platform_karg == "ignition.platform.id=aws"
    formats = {n: p.format for n, p in t.items()}
    assert formats["qemu"] == "qcow2" and formats["aws"] == "vmdk" and formats["azure"] == "vhd"
    assert formats["gcp"] == "gce" and formats["vmware"] == "ova" and formats["hyperv"] == "vhdx"
    assert formats["metal"] == "raw" and set(formats.values()) <= set(FORMATS)
    assert t["gcp"].size_multiple == 1 << 30 and t["azure"].size_multiple == 1 << 20
    assert t["nutanix"].format_options == {"compression": True}
    assert t["digitalocean"].compress == "gzip"
    for p in t.values():  # every platform id is a clean kernel-argument value
        assert p.platform_karg.count("=") == 1 and " " not in p.platform_karg


def test_unknown_platform_lists_the_known_ones():
    with pytest.raises(InvalidConfigError, match="unknown platform 'azuer'.*azure") as ei:
        get_platform("azuer", where="platforms[1]")
    assert ei.value.exit_code == 3 and "did you mean 'azure'" in ei.value.hint
    assert str(ei.value).startswith("platforms[1]:")


def test_check_size():
    gcp = get_platform("gcp")
    check_size(gcp, 4 << 30)
    with pytest.raises(InvalidConfigError, match="not a multiple of 1 GiB, as platform gcp requires"):
        check_size(gcp, (4 << 30) + (1 << 20))


def _bad(mutate, match: str):
    doc = copy.deepcopy(bundled_doc())
    mutate(doc["platforms"])
    with pytest.raises(InvalidConfigError, match=match):
        parse_platforms(doc)


@pytest.mark.parametrize("mutate,match", [
    (lambda p: p["qemu"].update(format="vdi"), r"platforms\.qemu\.format: 'vdi' is not one of"),
    (lambda p: p["qemu"].update(colour="blue"), r"platforms\.qemu\.colour: unknown key"),
    (lambda p: p["qemu"].pop("ignition_id"), r"platforms\.qemu\.ignition_id: missing"),
    (lambda p: p["qemu"].update(ignition_id="Q E"), r"ignition_id: 'Q E' is not a platform id"),
    (lambda p: p["qemu"].update(kernel_arguments=["console=tty0", "console=ttyS0", "115200n8"]),
     r"kernel_arguments\[2\]: '115200n8' is not a kernel argument"),
    (lambda p: p["qemu"].update(kernel_arguments=["a b"]), r"kernel_arguments\[0\]"),
    (lambda p: p["qemu"].update(grub_terminal=["serial", "vga"]), r"grub_terminal"),
    (lambda p: p["packet"].update(serial_unit=9), r"serial_unit: 9 is not an integer in 0\.\.3"),
    (lambda p: p["aws"].update(compress="xz"), r"aws\.compress: xz cannot be applied to vmdk"),
    (lambda p: p["gcp"].update(compress="zip"), r"gcp\.compress: 'zip' is not one of"),
    (lambda p: p["aws"]["format_options"].update(subformat="flat"), r"aws\.format_options: vmdk\.subformat: unknown option"),
    (lambda p: p["vmware"]["format_options"].update(hw_version=1), r"vmware\.format_options: ova\.hw_version"),
    (lambda p: p["metal"].update(format_options={"x": 1}), r"metal\.format_options: raw has no options"),
    (lambda p: p["metal4k"].update(disk={"sector_size": 1024}), r"disk\.sector_size: 1024 is not 512 or 4096"),
    (lambda p: p["metal4k"].update(disk={"sector_size": 4096, "size_multiple": "1K"}),
     r"disk\.size_multiple: 1024 is not a multiple of the sector size 4096"),
    (lambda p: p["gcp"].update(disk={"size_multiple": "lots"}), r"gcp\.disk\.size_multiple"),
    (lambda p: p["gcp"].update(disk={"colour": 1}), r"gcp\.disk\.colour: unknown key"),
    (lambda p: p.update({"Bad Name": {"ignition_id": "x", "format": "raw"}}), r"platforms\.Bad Name"),
])
def test_loader_rejects(mutate, match):
    _bad(mutate, match)


def test_loader_rejects_bad_documents(tmp_path):
    with pytest.raises(InvalidConfigError, match="version"):
        parse_platforms({"version": 2, "platforms": {}})
    with pytest.raises(InvalidConfigError, match="non-empty mapping"):
        parse_platforms({"version": 1, "platforms": []})
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nplatforms: {qemu: [\n")
    with pytest.raises(InvalidConfigError, match="not valid YAML"):
        load_platforms(f)
    with pytest.raises(InvalidConfigError, match="not found"):
        load_platforms(tmp_path / "missing.yaml")
    f.write_text("version: 1\nplatforms:\n  qemu: {ignition_id: qemu, format: qcow2}\n")
    assert load_platforms(f)["qemu"].grub_terminal == ("console",)
