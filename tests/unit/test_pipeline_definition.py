"""The image definition: typed load, defaults, strict validation with paths and hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError, UserInputError
from imagebuilder.pipeline.definition import (
    DEFAULT_CONSOLE,
    DEFAULT_SOURCE_EPOCH,
    DirectorySource,
    MmdebstrapSource,
    OutputFormat,
    RootFs,
    SectorSize,
    Size,
    load_definition,
)

MINIMAL = """\
name: tiny
source: {type: directory, path: rootfs}
ostree: {osname: tiny, ref: tiny/x86_64/dev}
"""


@pytest.fixture
def write(tmp_path: Path):
    (tmp_path / "rootfs").mkdir()

    def _write(text: str, name: str = "image.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


def test_minimal_definition_defaults(write, tmp_path):
    d = load_definition(write(MINIMAL))
    assert d.name == "tiny"
    assert isinstance(d.source, DirectorySource)
    assert d.source.path == tmp_path / "rootfs"  # relative to the YAML file, not the cwd
    assert d.effective_seed == "tiny"
    assert d.source_epoch == DEFAULT_SOURCE_EPOCH
    assert d.console == DEFAULT_CONSOLE
    assert d.outputs == (OutputFormat.raw,)
    assert d.disk.size == 4 << 30 and d.disk.sector_size == SectorSize.s512
    assert d.disk.root_fs == RootFs.ext4
    assert d.kernel_args == () and d.ignition is None


def test_full_definition(write, tmp_path):
    ign = tmp_path / "config.ign"
    ign.write_text(json.dumps({"ignition": {"version": "3.4.0"}}))
    d = load_definition(write(MINIMAL.replace("source: {type: directory, path: rootfs}", """\
source:
  type: mmdebstrap
  suite: bookworm
  variant: minbase
  packages: [linux-image-amd64, systemd-sysv]
""") + """\
seed: s3cr3t
source_epoch: 1234
kernel_args: [quiet, "mitigations=auto,nosmt"]
console: [ttyS0]
disk: {size: 8GiB, sector_size: 4096, root_fs: xfs, layout: fcos}
outputs: [raw]
ignition: {config: config.ign, platform: qemu, firstboot: false}
"""))
    assert isinstance(d.source, MmdebstrapSource)
    assert d.source.packages == ("linux-image-amd64", "systemd-sysv")
    assert d.effective_seed == "s3cr3t" and d.source_epoch == 1234
    assert d.disk.size == 8 << 30 and d.disk.sector_size == 4096 and d.disk.root_fs == RootFs.xfs
    assert d.ignition is not None and d.ignition.config == ign and d.ignition.platform == "qemu"
    assert d.ignition.firstboot is False


@pytest.mark.parametrize("snippet, where, hint", [
    ("sede: x\n", "sede: unknown key", "did you mean 'seed'?"),
    ("disk: {sise: 4G}\n", "disk.sise: unknown key", "did you mean 'size'?"),
    ("disk: {root_fs: ext5}\n", "disk.root_fs: 'ext5' is not one of 'ext4', 'xfs'", "did you mean 'ext4'?"),
    ("ignition: {platfrom: qemu}\n", "ignition.platfrom: unknown key", "did you mean 'platform'?"),
])
def test_unknown_keys_and_values_name_path_and_hint(write, snippet, where, hint):
    with pytest.raises(InvalidConfigError) as e:
        load_definition(write(MINIMAL + snippet))
    assert where in e.value.message
    assert e.value.hint == hint


def test_unknown_source_type_hint(write):
    with pytest.raises(InvalidConfigError) as e:
        load_definition(write(MINIMAL.replace("type: directory", "type: tarbal")))
    assert "source.type" in e.value.message and e.value.hint == "did you mean 'tarball'?"


def test_source_keys_checked_per_type(write):
    with pytest.raises(InvalidConfigError, match=r"source\.suite: unknown key"):
        load_definition(write(MINIMAL.replace("path: rootfs", "path: rootfs, suite: bookworm")))


@pytest.mark.parametrize("snippet, message", [
    ("outputs: [qcow2]\n", "outputs[0]: 'qcow2' is not yet supported"),
    ("outputs: [live-iso]\n", "outputs[0]: 'live-iso' is not yet supported"),
    ("outputs: [tarball]\n", "outputs[0]: 'tarball' is not one of"),
    ("disk: {size: 4X}\n", "disk.size: '4X' is not a size"),
    ("disk: {size: 100M}\n", "disk.size: must be at least 1G"),
    ("disk: {sector_size: 1024}\n", "disk.sector_size: 1024 is not one of 512, 4096"),
    ("kernel_args: [\"a b\"]\n", "kernel_args[0]: 'a b': one argument per list item"),
    ("kernel_args: quiet\n", "kernel_args: expected a list of str"),
    ("source_epoch: soon\n", "source_epoch: expected an integer"),
    ("ignition: {platform: 'Bad Platform'}\n", "ignition.platform"),
    ("ignition: {firstboot: yes-please}\n", "ignition.firstboot: expected true or false"),
])
def test_invalid_values(write, snippet, message):
    with pytest.raises(InvalidConfigError) as e:
        load_definition(write(MINIMAL + snippet))
    assert message in e.value.message


def test_required_keys(write):
    with pytest.raises(InvalidConfigError, match=r"ostree: required key missing"):
        load_definition(write("name: x\nsource: {type: directory, path: rootfs}\n"))
    with pytest.raises(InvalidConfigError, match=r"ostree.ref: required key missing"):
        load_definition(write(MINIMAL.replace(", ref: tiny/x86_64/dev", "")))


def test_ignition_config_is_validated(write, tmp_path):
    (tmp_path / "bad.ign").write_text("{not json")
    with pytest.raises(InvalidConfigError, match=r"ignition.config: .*not JSON"):
        load_definition(write(MINIMAL + "ignition: {config: bad.ign}\n"))
    (tmp_path / "noversion.ign").write_text("{}")
    with pytest.raises(InvalidConfigError, match=r"not an Ignition config"):
        load_definition(write(MINIMAL + "ignition: {config: noversion.ign}\n"))
    with pytest.raises(InvalidConfigError, match=r"ignition.config: .*No such file"):
        load_definition(write(MINIMAL + "ignition: {config: missing.ign}\n"))


def test_missing_source_paths(write):
    with pytest.raises(InvalidConfigError, match=r"source.path: .*directory not found"):
        load_definition(write(MINIMAL.replace("path: rootfs", "path: nope")))
    with pytest.raises(InvalidConfigError, match=r"source.path: .*file not found"):
        load_definition(write(MINIMAL.replace("type: directory, path: rootfs", "type: tarball, path: x.tar")))


def test_file_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_definition(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InvalidConfigError, match="not valid YAML"):
        load_definition(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(InvalidConfigError, match="expected a mapping"):
        load_definition(tmp_path / "list.yaml")


@pytest.mark.parametrize("text, value", [
    ("4G", 4 << 30), ("512M", 512 << 20), ("2GiB", 2 << 30), ("1073741824", 1 << 30), (4096, 4096),
])
def test_size_parse(text, value):
    assert Size.parse(text) == value
