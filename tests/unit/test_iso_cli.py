"""The ``imagebuilder iso ...`` verbs, run as a user runs them (subprocess)."""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import os
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = ["embed-areas-2021-01.iso.xz", "embed-areas-2021-12.iso.xz",
            "embed-areas-2022-09.iso.xz", "embed-areas-2023-03.x86_64.iso.xz",
            "embed-areas-2023-03.s390x.iso.xz"]
CONFIG = b'{"ignition":{"version":"3.3.0"}}\n'


@functools.cache
def _fixture_bytes(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture
def ib(capfdbinary, monkeypatch):
    """Run the CLI entry point in-process (fast); output captured at the fd level."""
    from imagebuilder.cli.main import main

    def run(*args, input: bytes | None = None) -> Result:
        capfdbinary.readouterr()
        stdin = io.TextIOWrapper(io.BytesIO(input or b""))
        monkeypatch.setattr(sys, "stdin", stdin)
        rc = main([str(a) for a in args])
        out, err = capfdbinary.readouterr()
        return Result(rc, out, err)
    return run


def ib_subprocess(*args, input: bytes | None = None, stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagebuilder", *map(str, args)], input=input,
                          capture_output=stdout is None, stdout=stdout)


@pytest.fixture
def iso(shared_fixtures, tmp_path, request):
    name = getattr(request, "param", "embed-areas-2023-03.x86_64.iso.xz")
    p = tmp_path / "live.iso"
    p.write_bytes(_fixture_bytes(shared_fixtures / "iso" / name))
    return p


@pytest.mark.parametrize("iso", FIXTURES, indirect=True)
def test_ignition_embed_show_remove(ib, iso, tmp_path):
    orig = sha(iso)
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(CONFIG)
    r = ib("iso", "ignition", "embed", "-i", cfg, iso)
    assert r.returncode == 0, r.stderr
    r = ib("iso", "ignition", "show", iso)
    assert r.returncode == 0 and r.stdout == CONFIG
    # refused without -f, accepted with -f (config from stdin)
    r = ib("iso", "ignition", "embed", iso, input=b"{}")
    assert r.returncode == 2
    assert b"This ISO image already has an embedded Ignition config; use -f to force." in r.stderr
    r = ib("iso", "ignition", "embed", "-f", iso, input=b"{}")
    assert r.returncode == 0, r.stderr
    assert ib("iso", "ignition", "show", iso).stdout == b"{}"
    assert ib("iso", "ignition", "remove", iso).returncode == 0
    assert sha(iso) == orig
    r = ib("iso", "ignition", "show", iso)
    assert r.returncode == 2 and b"No embedded Ignition config." in r.stderr


@pytest.mark.parametrize("iso", FIXTURES, indirect=True)
def test_output_modes_byte_identical(ib, iso, tmp_path):
    orig = sha(iso)
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(CONFIG)
    assert ib("iso", "ignition", "embed", "-i", cfg, "-o", tmp_path / "o.iso", iso).returncode == 0
    r = ib("iso", "ignition", "embed", "-i", cfg, "-o", "-", iso)
    assert r.returncode == 0
    (tmp_path / "s.iso").write_bytes(r.stdout)
    assert sha(iso) == orig
    assert ib("iso", "ignition", "embed", "-i", cfg, iso).returncode == 0
    assert sha(tmp_path / "o.iso") == sha(tmp_path / "s.iso") == sha(iso) != orig
    # -o refuses to clobber, -f overwrites
    r = ib("iso", "ignition", "remove", "-o", tmp_path / "o.iso", iso)
    assert r.returncode == 2 and b"file exists" in r.stderr
    assert ib("iso", "ignition", "remove", "-f", "-o", tmp_path / "o.iso", iso).returncode == 0
    assert sha(tmp_path / "o.iso") == orig


def test_stdout_terminal_refused(iso):
    master, slave = os.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "imagebuilder", "iso", "ignition", "embed",
                            "-o", "-", str(iso)], input=CONFIG, stdout=slave,
                           stderr=subprocess.PIPE)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 2
    assert b"Refusing to write binary data to terminal" in r.stderr


@pytest.mark.parametrize("iso", [f for f in FIXTURES if "s390x" not in f], indirect=True)
def test_kargs_modify_show_reset(ib, iso):
    orig = sha(iso)
    default = ib("iso", "kargs", "show", "-d", iso).stdout.decode().strip()
    assert ib("iso", "kargs", "show", iso).stdout.decode().strip() == default
    r = ib("iso", "kargs", "modify", "-a", "console=ttyS0", "-d", "ignition.firstboot",
           "-r", "ignition.platform.id=metal=qemu", iso)
    assert r.returncode == 0, r.stderr
    cur = ib("iso", "kargs", "show", iso).stdout.decode().strip()
    expected = default.replace(" ignition.firstboot", "").replace(
        "ignition.platform.id=metal", "ignition.platform.id=qemu") + " console=ttyS0"
    assert cur == expected
    assert ib("iso", "kargs", "show", "--default", iso).stdout.decode().strip() == default
    r = ib("iso", "kargs", "modify", "-a", "x" * 2000, iso)
    assert r.returncode == 2 and b"kargs too large for area" in r.stderr
    assert b"maximum kernel argument length" in r.stderr
    assert ib("iso", "kargs", "reset", iso).returncode == 0
    assert sha(iso) == orig


@pytest.mark.parametrize("iso", ["embed-areas-2023-03.s390x.iso.xz"], indirect=True)
def test_kargs_unsupported_s390x_2023_03(ib, iso):
    r = ib("iso", "kargs", "show", iso)
    assert r.returncode == 3 and b"No karg embed areas found" in r.stderr


@pytest.mark.parametrize("iso", [f for f in FIXTURES if "2021-01" not in f], indirect=True)
def test_network_embed_extract_remove(ib, iso, tmp_path):
    orig = sha(iso)
    k1, k2 = tmp_path / "eth0.nmconnection", tmp_path / "bond0.nmconnection"
    k1.write_bytes(b"[connection]\nid=eth0\n")
    k2.write_bytes(b"[connection]\nid=bond0\n")
    assert ib("iso", "network", "embed", "-k", k1, "-k", k2, iso).returncode == 0
    r = ib("iso", "network", "embed", "-k", k1, iso)
    assert r.returncode == 2 and b"already has embedded network settings; use -f" in r.stderr
    r = ib("iso", "network", "extract", iso)
    assert r.stdout == (b"########## bond0.nmconnection ##########\n[connection]\nid=bond0\n\n"
                        b"########## eth0.nmconnection ##########\n[connection]\nid=eth0\n")
    out = tmp_path / "out"
    r = ib("iso", "network", "extract", "-C", out, iso)
    assert r.returncode == 0
    assert (out / "eth0.nmconnection").read_bytes() == k1.read_bytes()
    assert oct((out / "eth0.nmconnection").stat().st_mode & 0o777) == "0o600"
    info = json.loads(ib("iso", "inspect", "--json", iso).stdout)
    paths = {f["path"]: f for f in info["embedded"]["files"]}
    assert paths["etc/coreos-firstboot-network/eth0.nmconnection"]["mode"] == "0o100600"
    assert info["customized"] is True
    assert ib("iso", "network", "remove", iso).returncode == 0
    assert sha(iso) == orig
    r = ib("iso", "network", "extract", iso)
    assert r.returncode == 2 and b"No embedded network settings." in r.stderr


@pytest.mark.parametrize("iso", ["embed-areas-2021-01.iso.xz"], indirect=True)
def test_network_gated_by_features(ib, iso, tmp_path):
    k = tmp_path / "eth0.nmconnection"
    k.write_bytes(b"x")
    orig = sha(iso)
    r = ib("iso", "network", "embed", "-k", k, iso)
    assert r.returncode == 2
    assert b"This OS image does not support customizing network settings." in r.stderr
    assert sha(iso) == orig


@pytest.mark.parametrize("iso", FIXTURES, indirect=True)
def test_reset_and_inspect(ib, iso, tmp_path):
    orig = sha(iso)
    before = json.loads(ib("iso", "inspect", "--json", iso).stdout)
    assert before["customized"] is False and before["embedded"]["files"] == []
    assert before["ignition_area"]["length"] == 262144
    assert ib("iso", "ignition", "embed", iso, input=CONFIG).returncode == 0
    if before["kargs"]:
        assert ib("iso", "kargs", "modify", "-a", "quiet", iso).returncode == 0
    after = json.loads(ib("iso", "inspect", "--json", iso).stdout)
    assert after["customized"] is True
    assert after["embedded"]["files"] == [{"path": "config.ign", "size": len(CONFIG),
                                           "mode": "0o100600",
                                           "sha256": hashlib.sha256(CONFIG).hexdigest()}]
    text = ib("iso", "inspect", iso)
    assert text.returncode == 0 and b"Customized:     yes" in text.stdout
    assert ib("iso", "reset", "-o", tmp_path / "pristine.iso", iso).returncode == 0
    assert sha(tmp_path / "pristine.iso") == orig
    assert ib("iso", "reset", iso).returncode == 0
    assert sha(iso) == orig


@pytest.mark.parametrize("iso", FIXTURES, indirect=True)
def test_extract_pxe(ib, iso, tmp_path):
    out = tmp_path / "pxe"
    r = ib("iso", "extract", "pxe", "-o", out, iso)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"live-vmlinuz", "live-initrd.img", "live-rootfs.img"} <= set(names)
    assert sorted(r.stdout.decode().split()) == [str(out / n) for n in names]
    plain_initrd = (out / "live-initrd.img").read_bytes()
    # again, customized: the initramfs carries the embedded initrd, 4-byte aligned
    assert ib("iso", "ignition", "embed", iso, input=CONFIG).returncode == 0
    r = ib("iso", "extract", "pxe", "-o", out, iso)
    assert r.returncode == 2 and b"file exists" in r.stderr
    r = ib("iso", "extract", "pxe", "-f", "-o", out, iso)
    assert r.returncode == 0, r.stderr
    initrd = (out / "live-initrd.img").read_bytes()
    pad = (4 - len(plain_initrd) % 4) % 4
    assert initrd[:len(plain_initrd)] == plain_initrd
    appended = initrd[len(plain_initrd) + pad:]
    assert appended[:6] == b"\xfd7zXZ\x00" and initrd[len(plain_initrd):][:pad] == b"\0" * pad
    from imagebuilder.iso.cpio import read_initrd

    assert read_initrd(appended)["config.ign"].data == CONFIG


def test_help_lists_groups():
    r = ib_subprocess("iso", "--help")
    assert r.returncode == 0
    for word in (b"ignition", b"network", b"kargs", b"extract", b"reset", b"inspect"):
        assert word in r.stdout


def test_cli_module_imports_lazily():
    """The command tables import only the flag table, no ISO code, typer or validator."""
    code = ("import sys\nimport imagebuilder.cli.iso, imagebuilder.cli.pxe\n"
            "bad = [m for m in sys.modules if m.startswith(('imagebuilder.iso', 'typer', "
            "'click', 'rich', 'pydantic', 'imagebuilder.ignition')) and m not in "
            "('imagebuilder.iso', 'imagebuilder.iso._record', 'imagebuilder.iso.flags')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deprecated_aliases(ib, iso):
    orig = sha(iso)
    r = ib("iso", "embed", iso, input=CONFIG)
    assert r.returncode == 0 and b"`iso embed` is deprecated" in r.stderr
    r = ib("iso", "show", iso)
    assert r.stdout == CONFIG and b"deprecated" in r.stderr
    assert ib("iso", "remove", iso).returncode == 0
    assert sha(iso) == orig


@pytest.mark.parametrize("where", ["copy_file_range", "pwrite"])
def test_write_failure_is_a_clean_error(ib, iso, tmp_path, monkeypatch, where):
    """ENOSPC during -o's copy: a clean error, nothing left behind. The reflink is refused
    first (as on ext4), so this holds on btrfs/XFS too."""
    import errno

    from imagebuilder import fsutil

    def enospc(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_reflink(*a):
        raise OSError(errno.EOPNOTSUPP, "no reflinks here")

    orig = sha(iso)
    monkeypatch.setattr(fsutil, "_reflink", no_reflink)
    if where == "pwrite":  # the copy_file_range-less fallback
        monkeypatch.setattr(fsutil.os, "copy_file_range", no_reflink)
    monkeypatch.setattr(fsutil.os, where, enospc)
    r = ib("iso", "ignition", "embed", "-o", tmp_path / "out.iso", iso, input=CONFIG)
    assert r.returncode == 2
    assert b"error: writing " in r.stderr and b"No space left on device" in r.stderr
    assert sha(iso) == orig
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.iso"]
