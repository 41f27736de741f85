"""Pure parts of the format library: VHD footer layout and checksum, CRC-32C, names."""

from __future__ import annotations

import pytest

from imagebuilder import formats
from imagebuilder.errors import InvalidConfigError
from imagebuilder.formats import common, vhd, vhdx, vmdk


def test_vhd_footer_fields_and_checksum():
    raw = vhd.build_footer(64 << 20, seed="s", epoch=vhd.VHD_EPOCH + 1000)
    assert len(raw) == 512 and raw[:8] == b"conectix"
    f = vhd.parse_footer(raw)
    assert (f.current_size, f.original_size, f.disk_type, f.timestamp) == (64 << 20, 64 << 20, 2, 1000)
    assert f.data_offset == 0xFFFFFFFFFFFFFFFF and f.geometry == (65535, 16, 255)
    assert f.checksum == vhd.footer_checksum(raw)
    assert raw != vhd.build_footer(64 << 20, seed="t", epoch=vhd.VHD_EPOCH + 1000)
    assert vhd.vhd_timestamp(0) == 0  # before 2000: clamped


def test_crc32c_vectors():
    assert vhdx.crc32c(b"") == 0
    assert vhdx.crc32c(b"123456789") == 0xE3069283
    assert vhdx.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_vmdk_cid_never_means_no_parent():
    cids = {vmdk.derived_cid(f"seed{i}") for i in range(2000)}
    assert vmdk.NO_PARENT not in cids and len(cids) == 2000


def test_file_names_and_unknown_format():
    assert formats.file_name("img", "gce") == "img-gcp.tar.gz"
    assert formats.file_name("img", "vhd", platform="azure") == "img-azure.x86_64.vhd"
    assert formats.file_name("img", "raw") == "img.x86_64.raw"
    with pytest.raises(InvalidConfigError, match=r"unknown format 'qcow3' \(allowed: raw, qcow2"):
        formats.file_name("img", "qcow3")


def test_human_sizes():
    assert common.human(2040 << 30) == "2040 GiB" and common.human(64 << 40) == "64 TiB"
    assert common.human(1536 << 20) == "1536 MiB" and common.human(1000) == "1000 bytes"
