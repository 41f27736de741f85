"""The rebuild path for ISOs without CoreOS embed areas (imagebuilder/iso/rebuild.py and
`iso customize --add-file/--karg-*/--volume-id`), on real ISOs with real xorriso, and
boots of the results as CD and as hybrid disk.

Observables under -nographic: grub-rescue's GRUB draws on VGA only, so the test replaces
its grub.cfg with one that switches GRUB to the serial terminal and echoes a marker; the
iPXE ISO prints to serial, and an iPXE script added to the ISO and handed to ipxe.krn as
an initrd (an ISOLINUX `append` line the karg edit creates) echoes a marker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from imagebuilder.boot import boot
from imagebuilder.errors import UserInputError
from imagebuilder.iso import rebuild as rb

REPO = Path(__file__).resolve().parents[2]
GRUB_RESCUE = Path("/usr/lib/grub-rescue/grub-rescue-cdrom.iso")
IPXE = Path("/usr/lib/ipxe/ipxe.iso")
GRUB_MARKER = "IB-REBUILD-GRUB-MARKER"
IPXE_MARKER = "IB-REBUILD-IPXE-MARKER"

_spec = importlib.util.spec_from_file_location("make_liveiso", REPO / "fixtures/liveiso/make_liveiso.py")
liveiso = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(liveiso)


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def extract(iso: Path, path: str, dest: Path) -> str:
    subprocess.run(["xorriso", "-no_rc", "-osirrox", "on", "-indev", str(iso), "-extract", path,
                    str(dest)], check=True, capture_output=True)
    return dest.read_text()


@pytest.fixture(scope="module")
def grub_iso(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("grub")
    cfg = d / "grub.cfg"
    cfg.write_text("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
                   f"echo {GRUB_MARKER}\nsleep 1\nhalt\n")
    out = d / "grub-rebuilt.iso"
    rep = rb.rebuild_iso(GRUB_RESCUE, out, add_files=[(cfg, "/boot/grub/grub.cfg")])
    assert rep.added_files == ["/boot/grub/grub.cfg"]
    return out


@pytest.fixture(scope="module")
def ipxe_iso(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ipxe")
    script = d / "ib.ipxe"
    script.write_text(f"#!ipxe\necho {IPXE_MARKER}\n")
    out = d / "ipxe-rebuilt.iso"
    from tests.conftest import run_cli

    r = run_cli("iso", "customize", "--add-file", f"{script}:/ib.ipxe",
                "--karg-append", "initrd=/ib.ipxe", "-o", str(out), str(IPXE))
    assert r.returncode == 0, r.stderr.decode()
    assert b"rebuilt" in r.stderr
    return out


# ----------------------------------------------------------------------- structure

def test_rebuild_keeps_el_torito_and_hybrid_layout(grub_iso, ipxe_iso):
    for src, out in ((GRUB_RESCUE, grub_iso), (IPXE, ipxe_iso)):
        assert rb.boot_images(out) == rb.boot_images(src)
        assert rb.system_area(out) == rb.system_area(src)
        assert rb.volume_id(out) == rb.volume_id(src)
        assert rb.has_joliet(out) == rb.has_joliet(src)
        assert set(rb.list_files(src)) <= set(rb.list_files(out)) | {"/boot/grub/grub.cfg"}
    assert "grub2-mbr" in rb.system_area(grub_iso)
    assert "isohybrid" in rb.system_area(ipxe_iso)


def test_added_file_and_inserted_append_line(ipxe_iso, tmp_path):
    assert extract(ipxe_iso, "/ib.ipxe", tmp_path / "s").startswith("#!ipxe\n")
    cfg = extract(ipxe_iso, "/isolinux.cfg", tmp_path / "c")
    assert " KERNEL ipxe.krn\n append initrd=/ib.ipxe" in cfg


def test_karg_edits_every_kernel_line_grub(tmp_path):
    out = tmp_path / "k.iso"
    rep = rb.rebuild_iso(GRUB_RESCUE, out, karg_append=["ib.karg=1"], karg_delete=["root"])
    assert rep.edited_configs == ["/boot/grub/grub.cfg"] and rep.kernel_lines == 1
    cfg = extract(out, "/boot/grub/grub.cfg", tmp_path / "g")
    subprocess.run(["grub-script-check", str(tmp_path / "g")], check=True)
    assert "\tlinux /vmlinuz ib.karg=1\n" in cfg              # root=/dev/sda1 deleted by name
    assert "linux16 /memtest86+.bin\n" in cfg                 # not a Linux kernel line
    assert "multiboot /boot/gnumach.gz root=device:hd0s1" in cfg


def test_edit_kernel_lines_syslinux_and_grub_semantics():
    text = ("default a\nlabel a\n  kernel /vmlinuz\n  append initrd=/i.img quiet console=tty0\n"
            "label b\n  kernel /vmlinuz2\n")
    new, n = rb.edit_kernel_lines("/isolinux/isolinux.cfg", text, ["console=ttyS0"], ["console=tty0"])
    assert n == 2
    assert "  append initrd=/i.img quiet console=ttyS0\n" in new
    assert new.endswith("  kernel /vmlinuz2\n  append console=ttyS0\n")
    grub = "menuentry x {\n\tlinuxefi /vmlinuz a=1 quiet\n\tinitrd /i\n}\n"
    new, n = rb.edit_kernel_lines("/EFI/BOOT/grub.cfg", grub, ["b=2"], ["a=1", "quiet"])
    assert n == 1 and "\tlinuxefi /vmlinuz b=2\n" in new


def test_rebuild_is_reproducible(tmp_path):
    script = tmp_path / "s.ipxe"
    script.write_text("#!ipxe\necho hi\n")
    outs = []
    for i in range(2):
        script.touch()  # a fresh mtime on the input must not matter
        out = tmp_path / f"r{i}.iso"
        rb.rebuild_iso(IPXE, out, add_files=[(script, "/s.ipxe")], karg_append=["initrd=/s.ipxe"],
                       volume_id="IB_REBUILT")
        outs.append(out)
    assert sha(outs[0]) == sha(outs[1])
    assert rb.volume_id(outs[0]) == "IB_REBUILT"
    other = tmp_path / "epoch.iso"
    rb.rebuild_iso(IPXE, other, add_files=[(script, "/s.ipxe")], karg_append=["initrd=/s.ipxe"],
                   volume_id="IB_REBUILT", source_date_epoch=1234567890)
    assert sha(other) != sha(outs[0])
    again = tmp_path / "epoch2.iso"
    rb.rebuild_iso(IPXE, again, add_files=[(script, "/s.ipxe")], karg_append=["initrd=/s.ipxe"],
                   volume_id="IB_REBUILT", source_date_epoch=1234567890)
    assert sha(again) == sha(other)


def test_rebuild_errors(tmp_path):
    with pytest.raises(UserInputError, match="no kernel command lines"):
        rb.rebuild_iso(IPXE, tmp_path / "x.iso", karg_delete=["quiet"])
    assert not (tmp_path / "x.iso").exists()
    (tmp_path / "exists.iso").write_bytes(b"")
    with pytest.raises(UserInputError, match="file exists"):
        rb.rebuild_iso(IPXE, tmp_path / "exists.iso")
    with pytest.raises(UserInputError, match="not found"):
        rb.rebuild_iso(IPXE, tmp_path / "y.iso", add_files=[(tmp_path / "nope", "/nope")])
    with pytest.raises(UserInputError, match="SRC:DEST"):
        rb.parse_add_file("just-a-path")
    with pytest.raises(UserInputError, match="invalid ISO path"):
        rb.parse_add_file("a:/../etc")
    with pytest.raises(UserInputError, match="new file"):
        rb.rebuild_iso(IPXE, IPXE)
    assert list(tmp_path.glob(".*.tmp")) == []


def test_cli_rebuild_path_rules(cli, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    r = cli("iso", "customize", "--karg-append", "x=1", str(IPXE))
    assert r.returncode == 2 and b"give -o OUT" in r.stderr
    ign = tmp_path / "c.ign"
    ign.write_text('{"ignition":{"version":"3.3.0"}}')
    r = cli("iso", "customize", "--live-ignition", str(ign), "--add-file", f"{f}:/f.txt",
            "-o", str(tmp_path / "o.iso"), str(IPXE))
    assert r.returncode == 2 and b"no CoreOS embed areas" in r.stderr
    assert not (tmp_path / "o.iso").exists()


def test_cli_coreos_iso_embed_plus_added_file(cli, tmp_path):
    """A CoreOS ISO: embed-area customizations, then a rebuild adds the file; the areas
    (file-relative) stay valid in the rebuilt ISO."""
    src = liveiso.build_liveiso()
    ign = tmp_path / "c.ign"
    ign.write_text(json.dumps({"ignition": {"version": "3.3.0"}}))
    extra = tmp_path / "notes.txt"
    extra.write_text("added by the rebuild path\n")
    out = tmp_path / "out.iso"
    r = cli("iso", "customize", "--live-ignition", str(ign), "--live-karg-append", "ib.x=1",
            "--add-file", f"{extra}:/extra/notes.txt", "-o", str(out), str(src))
    assert r.returncode == 0, r.stderr.decode()
    info = cli("iso", "kargs", "show", str(out))
    assert info.returncode == 0, info.stderr.decode()
    assert info.stdout.decode().split()[-1] == "ib.x=1"
    assert cli("iso", "ignition", "show", str(out)).returncode == 0
    assert extract(out, "/extra/notes.txt", tmp_path / "n") == "added by the rebuild path\n"
    r = cli("iso", "customize", "--karg-append", "x=1", "-o", str(tmp_path / "o2.iso"), str(src))
    assert r.returncode == 2 and b"--live-karg-append" in r.stderr


# ----------------------------------------------------------------------- boots

@pytest.mark.qemu
@pytest.mark.parametrize("hybrid", [False, True], ids=["cdrom", "hybrid-disk"])
def test_rebuilt_grub_rescue_boots(grub_iso, hybrid):
    res = boot(grub_iso, accel="auto", memory=256, hybrid_disk=hybrid, expect=GRUB_MARKER,
               timeout=120)
    assert res.matched, res.output[-1500:]


@pytest.mark.qemu
@pytest.mark.parametrize("hybrid", [False, True], ids=["cdrom", "hybrid-disk"])
def test_rebuilt_ipxe_boots_and_runs_added_script(ipxe_iso, hybrid):
    res = boot(ipxe_iso, accel="auto", memory=256, hybrid_disk=hybrid, expect=IPXE_MARKER,
               timeout=120)
    assert res.matched, res.output[-1500:]
    assert "Loading /ib.ipxe" in res.output


@pytest.mark.qemu
@pytest.mark.slow
def test_rebuilt_generic_live_iso_kargs_reach_the_kernel(tmp_path):
    """A live ISO without embed areas: karg edits go into ISOLINUX and GRUB, the volume ID
    is rewritten in both configs; the kernel sees it under SeaBIOS (CD) and OVMF (hybrid disk)."""
    src = liveiso.build_liveiso(plain=True)
    assert not rb.has_embed_areas(src)
    out = tmp_path / "plain-rebuilt.iso"
    rep = rb.rebuild_iso(src, out, karg_append=["ib.rebuilt=yes"], karg_delete=["ignition.firstboot"],
                         volume_id="IB-REBUILT-LIVE")
    assert rep.edited_configs == ["/EFI/fedora/grub.cfg", "/isolinux/isolinux.cfg"]
    assert rep.kernel_lines == 2
    for uefi, hybrid in ((False, False), (True, True)):
        res = boot(out, uefi=uefi, hybrid_disk=hybrid, accel="auto", memory=1024,
                   expect=liveiso.MARK_END, timeout=300)
        assert res.matched, res.output[-3000:]
        cmdline = liveiso.parse_console(res.output)["cmdline"].split()
        assert "ib.rebuilt=yes" in cmdline
        assert "ignition.firstboot" not in cmdline
        assert "coreos.liveiso=IB-REBUILT-LIVE" in cmdline
