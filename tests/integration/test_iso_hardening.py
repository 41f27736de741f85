"""Hardening of the ISO/PXE verbs, on the project's own generated live ISO (no ../shared):
decompression bombs, concurrent in-place edits, damaged embed areas, input warnings,
boot-config quoting and the messages a new user sees."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bombs
import liveiso_helpers as live
from imagebuilder.iso.image import IsoImage

cli, cli_rss = live.cli, live.cli_rss
CONFIG = b'{"ignition":{"version":"3.3.0"}}\n'
KEYFILE = b"[connection]\nid=eth0\ntype=ethernet\n"
RSS_LIMIT_MIB = 128


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def pristine() -> Path:
    return live.build()


@pytest.fixture
def iso(pristine, tmp_path) -> Path:
    p = tmp_path / "live.iso"
    shutil.copyfile(pristine, p)
    (tmp_path / "config.ign").write_bytes(CONFIG)
    (tmp_path / "eth0.nmconnection").write_bytes(KEYFILE)
    return p


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr.decode()
    return r


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def areas(path: Path):
    with IsoImage.open(path) as i:
        return i.ignition_area, i.kargs_areas


# ----------------------------------------------------------------------------- bombs

@pytest.fixture(scope="module")
def xz_bomb_area() -> bytes:
    """An embed area holding an xz initrd that expands to 1 GiB (169 KB compressed)."""
    data = bombs.xz_bomb(bombs.newc_header("config.ign", 1 << 30), 1 << 30, bombs.trailer())
    assert len(data) < 256 * 1024
    return data


def test_xz_bomb_in_the_ignition_area(iso, tmp_path, xz_bomb_area):
    area, _ = areas(iso)
    write_at(iso, area.offset, xz_bomb_area)
    for args, rc in ((["iso", "ignition", "show", iso], 3), (["iso", "inspect", iso], 0),
                     (["iso", "inspect", "--json", iso], 0),
                     (["iso", "extract", "pxe", "-o", tmp_path / "pxe", iso], 2)):
        rss, code, err = cli_rss(*args)
        assert code == rc, (args, err)
        assert rss <= RSS_LIMIT_MIB, (args, rss)
        if rc:
            assert "more than the limit of 32 MiB" in err and "iso reset" in err
    r = ok(cli("iso", "inspect", iso))
    assert b"damaged: decoding initrd embed area" in r.stdout and b"32 MiB" in r.stdout
    rss, code, err = cli_rss("iso", "ignition", "embed", "-f", "-i", tmp_path / "config.ign", iso)
    assert code == 0 and rss <= RSS_LIMIT_MIB, err
    assert "held undecodable data" in err and "it is overwritten" in err
    assert ok(cli("iso", "ignition", "show", iso)).stdout == CONFIG


def test_xz_bomb_of_small_members_hits_the_budget(iso, tmp_path):
    """Members each under the limit, together over it: stopped by the 32 MiB budget."""
    area, _ = areas(iso)
    parts = []
    for i in range(64):  # 64 x 16 MiB = 1 GiB
        parts += [bombs.newc_header(f"m{i}", 16 << 20), 16 << 20]
    write_at(iso, area.offset, bombs.xz_parts(parts + [bombs.trailer()]))
    for args in (["iso", "ignition", "show", iso], ["iso", "inspect", iso]):
        rss, code, err = cli_rss(*args)
        assert rss <= RSS_LIMIT_MIB, (args, rss)
    assert code == 0
    r = cli("iso", "ignition", "show", iso)
    assert r.returncode == 3 and b"expands beyond the limit of 32 MiB" in r.stderr


def test_gzip_bomb_initramfs_for_pxe(tmp_path):
    live_stamp = bombs.newc_header("etc/coreos-live-initramfs", 0)
    big = bombs.gzip_bomb(live_stamp + bombs.newc_header("usr/big", 3 << 30), 3 << 30,
                          bombs.trailer())
    (tmp_path / "bomb.img").write_bytes(big)
    (tmp_path / "dest.ign").write_bytes(CONFIG)
    rss, code, err = cli_rss("pxe", "customize", "--dest-device", "/dev/vda", "--dest-ignition",
                             tmp_path / "dest.ign", "-o", tmp_path / "out.img", tmp_path / "bomb.img")
    assert code == 3 and "expands beyond the limit of 2048 MiB" in err, err
    assert rss <= RSS_LIMIT_MIB
    # a kept member (features.json) that is too big for memory
    feats = bombs.gzip_bomb(live_stamp + bombs.newc_header("etc/coreos/features.json", 1 << 30),
                            1 << 30, bombs.trailer())
    (tmp_path / "feats.img").write_bytes(feats)
    rss, code, err = cli_rss("pxe", "customize", "--dest-device", "/dev/vda", "-o",
                             tmp_path / "out.img", tmp_path / "feats.img")
    assert code == 3 and "features.json is 1073741824 bytes, more than the limit of 1 MiB" in err
    assert rss <= RSS_LIMIT_MIB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.img", "dest.ign", "feats.img"]
    rss, code, err = cli_rss("pxe", "ignition", "unwrap", tmp_path / "feats.img")
    assert code == 3 and rss <= RSS_LIMIT_MIB and "32 MiB" in err


# ----------------------------------------------------------------------------- concurrency

def _parallel(argvs: list[list], stagger: float = 0.0) -> list[subprocess.CompletedProcess]:
    procs = []
    for a in argvs:
        procs.append(subprocess.Popen([sys.executable, "-m", "imagebuilder", *map(str, a)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        time.sleep(stagger)
    return [subprocess.CompletedProcess(p.args, p.wait(), *p.communicate()) for p in procs]


def test_concurrent_in_place_edits_lose_nothing(iso, tmp_path):
    for r in _parallel([["iso", "kargs", "modify", "-a", f"ib.n{i}=1", iso] for i in range(6)]):
        ok(r)
    kargs = ok(cli("iso", "kargs", "show", iso)).stdout.decode().split()
    assert {f"ib.n{i}=1" for i in range(6)} <= set(kargs)
    for r in _parallel([["iso", "ignition", "embed", "-i", tmp_path / "config.ign", iso],
                        ["iso", "network", "embed", "-k", tmp_path / "eth0.nmconnection", iso],
                        ["iso", "kargs", "modify", "-a", "ib.last=1", iso]]):
        ok(r)
    assert ok(cli("iso", "ignition", "show", iso)).stdout == CONFIG
    assert b"eth0.nmconnection" in ok(cli("iso", "network", "extract", iso)).stdout
    assert "ib.last=1" in ok(cli("iso", "kargs", "show", iso)).stdout.decode()


def test_second_writer_waits_and_says_so(iso, tmp_path):
    with open(iso, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        p = subprocess.Popen([sys.executable, "-m", "imagebuilder", "iso", "ignition", "embed",
                              "-i", tmp_path / "config.ign", iso], stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert p.poll() is None  # waiting
        fcntl.flock(f, fcntl.LOCK_UN)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert f"waiting for another process to finish with {iso}".encode() in err
    assert ok(cli("iso", "ignition", "show", iso)).stdout == CONFIG


# ----------------------------------------------------------------------------- damaged areas

def test_torn_ignition_area_is_repaired_by_the_writing_verbs(iso, pristine, tmp_path):
    area, _ = areas(iso)
    ok(cli("iso", "ignition", "embed", "-i", tmp_path / "config.ign", iso))
    embedded = iso.read_bytes()
    # a torn write: the first half of a new archive over the old one
    new = tmp_path / "new.iso"
    shutil.copyfile(pristine, new)
    ok(cli("iso", "network", "embed", "-k", tmp_path / "eth0.nmconnection", new))
    with open(new, "rb") as f:
        f.seek(area.offset)
        half = f.read(100)
    torn = tmp_path / "torn.iso"
    torn.write_bytes(embedded)
    write_at(torn, area.offset, half)
    r = cli("iso", "ignition", "show", torn)
    assert r.returncode == 3 and b"decoding initrd embed area" in r.stderr
    assert b"hint: `iso ignition remove`, `iso reset` or `iso ignition embed -f` overwrite it" in r.stderr
    r = cli("iso", "ignition", "embed", "-i", tmp_path / "config.ign", torn)
    assert r.returncode == 3
    for verb in (["iso", "ignition", "embed", "-f", "-i", tmp_path / "config.ign"],
                 ["iso", "ignition", "remove"], ["iso", "network", "remove"], ["iso", "reset"],
                 ["iso", "customize", "-f", "--live-ignition", tmp_path / "config.ign"]):
        t = tmp_path / "t.iso"
        shutil.copyfile(torn, t)
        ok(cli(*verb, t))
        ok(cli("iso", "inspect", t))
    ok(cli("iso", "reset", torn))
    assert sha(torn) == sha(pristine)


def test_damaged_kargs_areas_are_reported_and_reset(iso, pristine):
    _, ka = areas(iso)
    write_at(iso, ka.regions[0].offset, b"console=ttyS0 quiet\n###\x00garbage" + b"\xff" * 40)
    r = cli("iso", "kargs", "show", iso)
    assert r.returncode == 3 and len(r.stderr) < 600, r.stderr
    assert b"kargs reset" in r.stderr and str(iso).encode() in r.stderr
    r = cli("iso", "kargs", "modify", "-a", "x=1", iso)
    assert r.returncode == 3
    info = json.loads(ok(cli("iso", "inspect", "--json", iso)).stdout)
    assert info["kargs"]["problem"] and info["customized"] is True
    ok(cli("iso", "kargs", "reset", iso))
    assert sha(iso) == sha(pristine)


# ----------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("config,problem", [
    (b'{"ignition": {"version": "3.3.0"}', "line 1 col"),
    (b'{"ignition": {"version": "2.2.0"}}', "unsupported config version 2.2.0"),
    (b'{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "etc/x"}]}}',
     "$.storage.files.0.path"),
])
def test_invalid_ignition_warns_and_strict_refuses(iso, tmp_path, config, problem):
    (tmp_path / "bad.ign").write_bytes(config)
    r = ok(cli("iso", "ignition", "embed", "-i", tmp_path / "bad.ign", iso))
    err = r.stderr.decode()
    assert err.startswith(f"warning: {tmp_path / 'bad.ign'}: not a valid Ignition config: error at")
    assert problem in err and "--strict refuses it" in err
    assert ok(cli("iso", "ignition", "show", iso)).stdout == config  # embedded as given
    before = sha(iso)
    r = cli("iso", "ignition", "embed", "-f", "--strict", "-i", tmp_path / "bad.ign", iso)
    assert r.returncode == 3 and b"error: " in r.stderr and problem.encode() in r.stderr
    assert sha(iso) == before
    r = cli("iso", "ignition", "embed", "-f", "--strict", iso, input=config)
    assert r.returncode == 3 and b"stdin: not a valid Ignition config" in r.stderr


def test_binary_keyfile_warns_and_strict_refuses(iso, tmp_path):
    (tmp_path / "junk").write_bytes(b"[connection]\nid=x\n\x00\x01\x02\xff")
    r = ok(cli("iso", "network", "embed", "-k", tmp_path / "junk", iso))
    assert b"not a NetworkManager keyfile: line 3 col 4: not UTF-8 text" in r.stderr
    r = cli("iso", "network", "embed", "-f", "--strict", "-k", tmp_path / "junk", iso)
    assert r.returncode == 3
    r = ok(cli("iso", "network", "embed", "-f", "--strict", "-k", tmp_path / "eth0.nmconnection", iso))
    assert r.stderr == b""


# ----------------------------------------------------------------------------- boot configs

def _extract(iso: Path, path: str, dest: Path) -> str:
    subprocess.run(["xorriso", "-no_rc", "-osirrox", "on", "-indev", str(iso), "-extract", path,
                    str(dest)], check=True, capture_output=True)
    return dest.read_text()


def grub_script_check(cfg: str, tmp_path: Path) -> None:
    p = tmp_path / "check.cfg"
    p.write_text(cfg)
    r = subprocess.run(["grub-script-check", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("karg", ["quiet\n initrd /images/evil.img", "a;reboot", "#x", "x=$HOME",
                                  'foo="bar', "x}", "$(reboot)", "it's", 'x="a b"'])
def test_kargs_area_refuses_injection(iso, karg, tmp_path):
    before = sha(iso)
    r = cli("iso", "kargs", "modify", "-a", karg, iso)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith(f"error: {iso}: kernel argument".encode()) or \
        r.stderr.startswith(b"error: ")
    assert str(iso).encode() in r.stderr
    r = cli("iso", "customize", "--live-karg-append", karg, iso)
    assert r.returncode == 3
    assert sha(iso) == before


def test_kargs_area_edits_keep_grub_cfg_valid(iso, tmp_path):
    ok(cli("iso", "kargs", "modify", "-a", "console=ttyS1,115200n8", "-a", "ib.x=a:b/c", "-d",
           "quiet", "-r", "ignition.platform.id=metal=qemu", iso))
    cfg = _extract(iso, "/EFI/fedora/grub.cfg", tmp_path / "g")
    grub_script_check(cfg, tmp_path)
    line = next(ln for ln in cfg.splitlines() if ln.strip().startswith("linux "))
    assert line.split()[2:] == ["console=ttyS0", "coreos.liveiso=ib-live-fixture",
                                "ignition.firstboot", "ignition.platform.id=qemu", "panic=-1",
                                "console=ttyS1,115200n8", "ib.x=a:b/c"]
    r = cli("iso", "kargs", "modify", "-d", "nosuch", iso)
    assert r.returncode == 3 and b"no such kernel argument" in r.stderr
    assert str(iso).encode() in r.stderr


def test_rebuild_quotes_kargs_for_grub_and_skips_duplicates(tmp_path):
    plain = live.build(plain=True)
    out = tmp_path / "r.iso"
    ok(cli("iso", "customize", "--karg-append", "a;reboot", "--karg-append", "x=$HOME",
           "--karg-append", "#x", "--karg-append", 'y="a b"', "--karg-append", "console=ttyS0",
           "--karg-delete", "quiet", "-o", out, plain))
    cfg = _extract(out, "/EFI/fedora/grub.cfg", tmp_path / "g")
    grub_script_check(cfg, tmp_path)
    line = next(ln for ln in cfg.splitlines() if ln.strip().startswith("linux "))
    assert line.endswith(" panic=-1 'a;reboot' 'x=$HOME' '#x' 'y=a b'")
    assert line.count("console=ttyS0") == 1 and " quiet" not in line
    iso_cfg = _extract(out, "/isolinux/isolinux.cfg", tmp_path / "i")
    append = next(ln for ln in iso_cfg.splitlines() if ln.strip().startswith("append "))
    assert append.endswith(' panic=-1 a;reboot x=$HOME #x y="a b"')
    for bad in ("quiet\n initrd /images/evil.img", "x\x01", 'foo="bar', "it's"):
        r = cli("iso", "customize", "--karg-append", bad, "-f", "-o", out, plain)
        assert r.returncode == 3, (bad, r.stderr)


# ----------------------------------------------------------------------------- messages

def test_new_user_messages(iso, pristine, tmp_path):
    r = cli("iso", "ignition", "show", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {tmp_path}: is a directory, expected an ISO image".encode())
    r = cli("iso", "ignition", "embed", "-i", tmp_path / "config.ign", "-o", tmp_path, iso)
    assert r.returncode == 2 and b"is a directory" in r.stderr and b"file exists" not in r.stderr
    r = cli("iso", "ignition", "embed", "-i", tmp_path, iso)
    assert b"is a directory, expected an Ignition config" in r.stderr
    (tmp_path / "o.iso").write_bytes(b"")
    for args in (["iso", "ignition", "embed", "-i", tmp_path / "config.ign", "-o", tmp_path / "o.iso", iso],
                 ["iso", "reset", "-o", tmp_path / "o.iso", iso],
                 ["iso", "customize", "--live-ignition", tmp_path / "config.ign", "-o", tmp_path / "o.iso", iso]):
        r = cli(*args)
        assert r.returncode == 2
        assert r.stderr.decode().splitlines()[-1] == "hint: use --force (-f) to overwrite"
    r = cli("iso", "kargs", "modify", "-a", "x" * 2000, iso)
    assert r.returncode == 2 and f"error: {iso}: kargs too large".encode() in r.stderr


def test_customize_prints_notes_only_after_success(iso, tmp_path):
    (tmp_path / "odd.ign").write_bytes(b'{"ignition": {"version": "3.2.0"}, "foo": 1}')
    ok(cli("iso", "ignition", "embed", "-i", tmp_path / "config.ign", iso))
    r = cli("iso", "customize", "--live-ignition", tmp_path / "odd.ign", iso)  # customized
    assert r.returncode == 2 and b"already customized" in r.stderr
    assert b"Warning parsing" not in r.stderr
    # a failure after the config was built (the result does not fit the area)
    import base64

    blob = base64.b64encode(os.urandom(300_000)).decode()
    (tmp_path / "big.ign").write_text(json.dumps({"ignition": {"version": "3.2.0"}, "foo": 1,
        "storage": {"files": [{"path": "/b", "contents": {"source": "data:;base64," + blob}}]}}))
    r = cli("iso", "customize", "-f", "--live-ignition", tmp_path / "big.ign", iso)
    assert r.returncode == 2 and b"Compressed initramfs is too large" in r.stderr
    assert b"Warning parsing" not in r.stderr
    r = ok(cli("iso", "customize", "-f", "--live-ignition", tmp_path / "odd.ign", "-o",
               tmp_path / "o.iso", iso))
    assert b"Warning parsing" in r.stderr and b"unused key foo" in r.stderr


def test_embed_flags_on_a_plain_iso_list_the_alternatives(tmp_path):
    plain = live.build(plain=True)
    (tmp_path / "c.ign").write_bytes(CONFIG)
    for args in (["iso", "customize", "--live-ignition", tmp_path / "c.ign", plain],
                 ["iso", "ignition", "embed", "-i", tmp_path / "c.ign", plain]):
        r = cli(*args)
        assert r.returncode in (2, 3) and b"Unrecognized CoreOS ISO image" in r.stderr
        assert re.search(rb"hint: .*--add-file SRC:DEST, --karg-append KARG, --karg-delete KARG"
                         rb" or --volume-id LABEL, with -o OUT", r.stderr), r.stderr


def test_pxe_customize_from_stdin_and_to_stdout(tmp_path):
    import iso_golden

    src = tmp_path / "live.img"
    src.write_bytes(iso_golden.live_initramfs())
    (tmp_path / "d.ign").write_bytes(CONFIG)
    flags = ["--dest-device", "/dev/vda", "--dest-ignition", tmp_path / "d.ign"]
    ok(cli("pxe", "customize", *flags, "-o", tmp_path / "a.img", src))
    ok(cli("pxe", "customize", *flags, "-o", tmp_path / "b.img", "-", input=src.read_bytes()))
    c = ok(cli("pxe", "customize", *flags, "-o", "-", "-", input=src.read_bytes())).stdout
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes() == c
    assert c.startswith(src.read_bytes())
    r = cli("pxe", "customize", *flags, "-o", tmp_path / "b.img", "-", input=src.read_bytes())
    assert r.returncode == 2 and r.stderr.decode().endswith("hint: use --force (-f) to overwrite\n")
    r = cli("pxe", "customize", *flags, "-o", tmp_path / "x.img", "-", input=b"not an initrd")
    assert r.returncode == 3 and b"stdin: unrecognized data in initrd" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "b.img", "d.ign", "live.img"]
