"""IsoImage + writers on every fixture generation: embed/remove/reset round trips,
the three output modes, refusal rules, and all-or-nothing failure behaviour."""

from __future__ import annotations

import errno
import functools
import hashlib
import lzma
import os
from pathlib import Path

import pytest

from imagebuilder.errors import BadImageError, UserInputError
from imagebuilder.iso import write as iso_write
from imagebuilder.iso.cpio import Member, newc_archive
from imagebuilder.iso.image import (InitrdTooLarge, IsoImage, embed_initrd_members,
                                    read_embedded_members)
from imagebuilder.iso.kargs import KargsTooLarge
from imagebuilder.iso.write import apply_in_place, stream, write_copy, write_result

FIXTURES = ["embed-areas-2021-01.iso.xz", "embed-areas-2021-12.iso.xz",
            "embed-areas-2022-09.iso.xz", "embed-areas-2023-03.x86_64.iso.xz",
            "embed-areas-2023-03.s390x.iso.xz"]
WITH_KARGS = [f for f in FIXTURES if "s390x" not in f]
WITH_NETWORK = [f for f in FIXTURES if "2021-01" not in f]
CONFIG = b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/motd"}]}}\n'


@functools.cache
def _fixture_bytes(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def make_iso(shared_fixtures, tmp_path):
    def make(name: str, dest: str = "in.iso") -> Path:
        p = tmp_path / dest
        p.write_bytes(_fixture_bytes(shared_fixtures / "iso" / name))
        return p
    return make


def embed(path: Path, config: bytes = CONFIG, output: str | None = None, force=False) -> None:
    with IsoImage.open(path, writable=output is None) as iso:
        iso.set_ignition(config)
        write_result(iso, iso.patches(), output, force)


def three_ways(path: Path, tmp_path: Path, mutate) -> tuple[str, str, str]:
    """Apply mutate via -o FILE, -o - and in place; return the three sha256."""
    out_file = tmp_path / "out-file.iso"
    with IsoImage.open(path) as iso:
        mutate(iso)
        patches = iso.patches()
        write_copy(path, out_file, patches)
        streamed = tmp_path / "out-stream.iso"
        with open(streamed, "wb") as f:
            stream(path, patches, f.fileno())
    inplace = tmp_path / "inplace.iso"
    inplace.write_bytes(path.read_bytes())
    with IsoImage.open(inplace, writable=True) as iso:
        mutate(iso)
        apply_in_place(iso.fs.fd, iso.patches())
    return sha(out_file), sha(streamed), sha(inplace)


@pytest.mark.parametrize("name", FIXTURES)
def test_embed_show_remove_roundtrip(make_iso, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    embed(iso_p)
    assert sha(iso_p) != orig
    with IsoImage.open(iso_p, writable=True) as iso:
        assert iso.ignition == CONFIG and iso.is_customized
        area = iso.original_area_data
        expected = lzma.compress(newc_archive({"config.ign": Member(CONFIG)}),
                                 format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)
        assert area == expected + b"\0" * (len(area) - len(expected))
        iso.remove_ignition()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == orig


@pytest.mark.parametrize("name", FIXTURES)
def test_three_output_modes_identical(make_iso, tmp_path, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)

    def mutate(iso: IsoImage) -> None:
        iso.set_ignition(CONFIG)
        if iso.kargs_supported:
            iso.modify_kargs(append=["console=ttyS0"], delete=["ignition.firstboot"])

    a, b, c = three_ways(iso_p, tmp_path, mutate)
    assert a == b == c != orig
    assert sha(iso_p) == orig  # -o and -o - never touch the input


@pytest.mark.parametrize("name", FIXTURES)
def test_reset_restores_pristine(make_iso, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    with IsoImage.open(iso_p, writable=True) as iso:
        embed_initrd_members(iso, {"etc/hello": (b"hi", 0o100644), "config.ign": CONFIG})
        if name in WITH_NETWORK:
            iso.add_network_keyfiles([("eth0.nmconnection", b"[connection]\n")])
        if iso.kargs_supported:
            iso.modify_kargs(append=["quiet"])
        apply_in_place(iso.fs.fd, iso.patches())
    with IsoImage.open(iso_p, writable=True) as iso:
        members = read_embedded_members(iso)
        assert members["etc/hello"] == (b"hi", 0o100644)
        assert members["config.ign"] == (CONFIG, 0o100600)
        if name in WITH_NETWORK:
            assert members["etc/coreos-firstboot-network/eth0.nmconnection"] == \
                (b"[connection]\n", 0o100600)
            assert iso.has_network
        if iso.kargs_supported:
            assert iso.kargs.endswith(" quiet")
        iso.reset()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == orig


@pytest.mark.parametrize("name", WITH_NETWORK)
def test_ignition_and_network_are_independent(make_iso, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    embed(iso_p)
    after_ign = sha(iso_p)
    with IsoImage.open(iso_p, writable=True) as iso:
        iso.add_network_keyfiles([("a.nmconnection", b"A"), ("b.nmconnection", b"B")])
        apply_in_place(iso.fs.fd, iso.patches())
    with IsoImage.open(iso_p, writable=True) as iso:
        assert iso.network_files == {"a.nmconnection": b"A", "b.nmconnection": b"B"}
        assert iso.ignition == CONFIG
        iso.remove_network()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == after_ign
    with IsoImage.open(iso_p, writable=True) as iso:
        iso.remove_ignition()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == orig


def test_network_needs_feature(make_iso):
    iso_p = make_iso("embed-areas-2021-01.iso.xz")
    with IsoImage.open(iso_p) as iso:
        with pytest.raises(UserInputError,
                           match="This OS image does not support customizing network settings."):
            iso.add_network_keyfiles([("eth0.nmconnection", b"x")])


def test_duplicate_keyfile_names(make_iso):
    with IsoImage.open(make_iso("embed-areas-2022-09.iso.xz")) as iso:
        with pytest.raises(UserInputError, match="multiple input files named 'x'"):
            iso.add_network_keyfiles([("x", b"1"), ("x", b"2")])


@pytest.mark.parametrize("name", FIXTURES)
def test_too_large_config_refused_before_any_write(make_iso, tmp_path, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    big = os.urandom(300 * 1024)  # incompressible
    with IsoImage.open(iso_p) as iso:
        iso.set_ignition(big)
        with pytest.raises(InitrdTooLarge) as ei:
            iso.patches()
    assert ei.value.message.startswith("Compressed initramfs is too large: ")
    assert ei.value.message.endswith(f" > {iso.ignition_area.length}")
    assert sha(iso_p) == orig
    assert sorted(os.listdir(tmp_path)) == ["in.iso"]


@pytest.mark.parametrize("name", WITH_KARGS)
def test_kargs_maximum_length(make_iso, tmp_path, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    with IsoImage.open(iso_p) as iso:
        default, size = iso.default_kargs, iso.kargs_areas.size
        room = size - len(default) - 1 - 1  # one separating space, one end character
        iso.modify_kargs(append=["x" * room])
        assert len(iso.kargs) == size - 1 == iso.kargs_max_length
        a, b, c = three_ways(iso_p, tmp_path, lambda i: i.modify_kargs(append=["x" * room]))
        assert a == b == c
    with IsoImage.open(iso_p) as iso:
        with pytest.raises(KargsTooLarge, match=f"kargs too large for area: {size + 1} vs {size}"):
            iso.modify_kargs(append=["x" * (room + 1)])
    assert sha(iso_p) == orig
    # and the written maximum-length kargs read back; reset restores the original bytes
    with IsoImage.open(iso_p, writable=True) as iso:
        iso.modify_kargs(append=["x" * room])
        apply_in_place(iso.fs.fd, iso.patches())
    with IsoImage.open(iso_p, writable=True) as iso:
        assert iso.kargs == default + " " + "x" * room
        iso.reset_kargs()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == orig


def test_s390x_2023_03_has_no_kargs(make_iso):
    with IsoImage.open(make_iso("embed-areas-2023-03.s390x.iso.xz")) as iso:
        assert not iso.kargs_supported
        with pytest.raises(BadImageError, match="No karg embed areas found"):
            iso.kargs  # noqa: B018
        iso.reset()  # without kargs areas reset still works
        assert [r.offset for r in iso.patches()] == [iso.ignition_area.offset]


def test_unchanged_image_has_no_patches(make_iso):
    with IsoImage.open(make_iso("embed-areas-2022-09.iso.xz")) as iso:
        assert iso.patches() == []
        iso.inspect()


# -- failures leave no trace -----------------------------------------------------------------
class _FailingPwrite:
    """os.pwrite that fails (ENOSPC) on the n-th call."""

    def __init__(self, fail_on: int):
        self.calls = 0
        self.fail_on = fail_on
        self.real = os.pwrite

    def __call__(self, fd, data, offset):
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd, data, offset)


@pytest.mark.parametrize("name", WITH_KARGS)
def test_in_place_write_failure_rolls_back(make_iso, tmp_path, monkeypatch, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    with IsoImage.open(iso_p, writable=True) as iso:
        iso.set_ignition(CONFIG)
        iso.modify_kargs(append=["console=ttyS0"])
        patches = iso.patches()
        assert len(patches) == 3
        monkeypatch.setattr(iso_write.os, "pwrite", _FailingPwrite(fail_on=3))
        with pytest.raises(iso_write.WriteError, match="No space left on device"):
            write_result(iso, patches, None)
    monkeypatch.undo()
    assert sha(iso_p) == orig
    assert sorted(os.listdir(tmp_path)) == ["in.iso"]


@pytest.mark.parametrize("name", FIXTURES)
def test_output_file_write_failure_leaves_nothing(make_iso, tmp_path, monkeypatch, name):
    iso_p = make_iso(name)
    orig = sha(iso_p)
    with IsoImage.open(iso_p) as iso:
        iso.set_ignition(CONFIG)
        patches = iso.patches()
        monkeypatch.setattr(iso_write.os, "pwrite", _FailingPwrite(fail_on=1))
        with pytest.raises(iso_write.WriteError, match="No space left on device"):
            write_result(iso, patches, str(tmp_path / "out.iso"))
    monkeypatch.undo()
    assert sha(iso_p) == orig
    assert sorted(os.listdir(tmp_path)) == ["in.iso"]


def test_output_no_clobber_and_force(make_iso, tmp_path):
    iso_p = make_iso("embed-areas-2023-03.x86_64.iso.xz")
    out = tmp_path / "out.iso"
    out.write_bytes(b"existing")
    with IsoImage.open(iso_p) as iso:
        iso.set_ignition(CONFIG)
        patches = iso.patches()
        with pytest.raises(UserInputError, match="file exists"):
            write_result(iso, patches, str(out))
        assert out.read_bytes() == b"existing"
        write_result(iso, patches, str(out), force=True)
    with IsoImage.open(out) as iso:
        assert iso.ignition == CONFIG
    assert sorted(os.listdir(tmp_path)) == ["in.iso", "out.iso"]


def test_stream_refuses_terminal(make_iso):
    iso_p = make_iso("embed-areas-2022-09.iso.xz")
    master, slave = os.openpty()
    try:
        with pytest.raises(UserInputError, match="Refusing to write binary data to terminal"):
            stream(iso_p, [], slave)
    finally:
        os.close(master)
        os.close(slave)


def test_read_only_input_is_never_fully_loaded(make_iso, tmp_path):
    """Opening reads only descriptors, directories and areas (a 1 GiB sparse tail is fine)."""
    import subprocess
    import sys

    iso_p = make_iso("embed-areas-2023-03.x86_64.iso.xz")
    embed(iso_p)
    with open(iso_p, "r+b") as f:
        f.truncate(1 << 30)
    # VmHWM (peak RSS of this process image; ru_maxrss would inherit pytest's across exec)
    code = ("import re, sys\n"
            "from imagebuilder.iso import IsoImage\n"
            "with IsoImage.open(sys.argv[1]) as iso:\n"
            "    info = iso.inspect()\n"
            "assert info['embedded']['ignition']\n"
            "status = open('/proc/self/status').read()\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(iso_p)], capture_output=True,
                          text=True, check=True)
    assert int(proc.stdout) < 64 * 1024  # KiB


def test_garbage_in_embed_area_is_a_bad_image_that_can_be_overwritten(make_iso):
    iso_p = make_iso("embed-areas-2023-03.x86_64.iso.xz")
    orig = sha(iso_p)
    with IsoImage.open(iso_p) as iso:
        off = iso.ignition_area.offset
    with open(iso_p, "r+b") as f:
        f.seek(off)
        f.write(b"not an archive")
    with IsoImage.open(iso_p, writable=True) as iso:
        assert iso.area_damaged and iso.is_customized
        for read in (lambda: iso.ignition, lambda: iso.network_files, lambda: iso.members):
            with pytest.raises(BadImageError, match="decoding initrd embed area at offset") as ei:
                read()
            assert "iso reset" in ei.value.hint
        info = iso.inspect()
        assert "decoding initrd embed area" in info["ignition_area"]["problem"]
        iso.reset()
        apply_in_place(iso.fs.fd, iso.patches())
    assert sha(iso_p) == orig
