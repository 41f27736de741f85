"""Byte-for-byte digests of the ISO/PXE verbs' outputs, to keep restructurings honest.

``compute_shared(shared_iso_dir, customize_dir, work)`` runs every case on the
coreos-installer fixture ISOs through the real CLI (a subprocess per command) and returns
``{case: sha256}`` of what each command wrote (the ISO, ``-o`` file, stdout or extracted
files). ``compute_liveiso(iso, work)`` does the same on the project's generated live ISO;
there the ISO layout depends on the host's kernel, so a case's digest covers only the
2048-byte sectors the command changed (and appended initrd data), which depend on
nothing but the command.

The recorded digests (``tests/data/iso_golden.json``) were taken with the code before the
ISO/PXE commands were restructured; ``tests/unit/test_iso_golden.py`` and
``tests/integration/test_iso_golden_liveiso.py`` compare against them. Re-record only for a
deliberate output change: ``python tests/iso_golden.py --record``.

Deliberate changes since the first recording: ``liveiso/kargs-modify``,
``liveiso/kargs-show`` and ``rebuild/*`` -- appending a kernel argument that is already
there no longer adds it twice (the one karg model; the fixture's kargs have
``console=ttyS0``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECORD = HERE / "data" / "iso_golden.json"

SHARED_ISOS = {
    "2021-01": "embed-areas-2021-01.iso.xz",
    "2021-12": "embed-areas-2021-12.iso.xz",
    "2022-09": "embed-areas-2022-09.iso.xz",
    "2023-03": "embed-areas-2023-03.x86_64.iso.xz",
    "s390x": "embed-areas-2023-03.s390x.iso.xz",
}
CONFIG = b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/golden"}]}}\n'
KEYFILES = {"eth0.nmconnection": b"[connection]\nid=eth0\ntype=ethernet\n",
            "bond0.nmconnection": b"[connection]\nid=bond0\ntype=bond\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cli(*args, cwd: Path, stdin: bytes = b"") -> bytes:
    env = dict(os.environ, IMAGEBUILDER_NO_FASTPATH="")
    env.pop("IMAGEBUILDER_NO_FASTPATH")
    r = subprocess.run([sys.executable, "-m", "imagebuilder", *map(str, args)], cwd=cwd,
                       input=stdin, capture_output=True, env=env)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))}: exit {r.returncode}: "
                             f"{r.stderr.decode(errors='replace')}")
    return r.stdout


def _inputs(work: Path, customize_dir: Path | None) -> None:
    (work / "config.ign").write_bytes(CONFIG)
    for n, b in KEYFILES.items():
        (work / n).write_bytes(b)
    if customize_dir is not None:
        for p in customize_dir.iterdir():
            shutil.copyfile(p, work / p.name)


def live_initramfs() -> bytes:
    """A minimal CoreOS live PXE initramfs (gzip newc, deterministic)."""
    from imagebuilder.iso.cpio import Member, newc_archive

    features = json.dumps({"installer-config": True, "live-initrd-network": True,
                           "installer-config-directives": {"console": True}}).encode()
    arc = newc_archive({"etc/coreos-live-initramfs": Member(b"", 0o100644),
                        "etc/coreos/features.json": Member(features, 0o100644),
                        "init": Member(b"#!/bin/sh\n", 0o100755)})
    return gzip.compress(arc, mtime=0)


CUSTOMIZE_FLAGS = [
    "--dest-ignition", "dest.ign", "--dest-ignition", "dest-2.ign", "--dest-device", "/dev/vda",
    "--dest-console", "ttyS0,115200n8", "--dest-karg-append", "foo=bar",
    "--dest-karg-delete", "mitigations=auto,nosmt",
    "--network-keyfile", "installer-test.nmconnection",
    "--network-nmstate", "installer-test-nmstate-yaml.yaml", "--ignition-ca", "cert.pem",
    "--pre-install", "pre-install-1", "--post-install", "post-install-1",
    "--installer-config", "install-1.conf", "--live-ignition", "live.ign",
]
LIVE_KARGS = ["--live-karg-append", "console=ttyS0", "--live-karg-delete", "ignition.firstboot",
              "--live-karg-replace", "ignition.platform.id=metal=qemu"]
PXE_FLAGS = [f for f in CUSTOMIZE_FLAGS]


def _iso_cases(key: str, work: Path, fresh, out_digest) -> dict[str, str]:
    """The cases on one ISO; ``fresh()`` lays a pristine copy at work/live.iso;
    ``out_digest(path)`` digests an output ISO."""
    d: dict[str, str] = {}
    iso = work / "live.iso"
    kargs = key != "s390x"
    network = key != "2021-01"

    fresh()
    cli("iso", "ignition", "embed", "-i", "config.ign", "live.iso", cwd=work)
    d["ignition-embed"] = out_digest(iso)
    d["ignition-show"] = sha(cli("iso", "ignition", "show", "live.iso", cwd=work))
    cli("iso", "ignition", "embed", "-f", "live.iso", cwd=work, stdin=b"{}")
    d["ignition-embed-force-stdin"] = out_digest(iso)
    cli("iso", "ignition", "remove", "live.iso", cwd=work)
    d["ignition-remove"] = out_digest(iso)

    fresh()
    cli("iso", "ignition", "embed", "-i", "config.ign", "-o", "out.iso", "live.iso", cwd=work)
    d["ignition-embed-o"] = out_digest(work / "out.iso")
    (work / "out.iso").unlink()
    (work / "stdout.iso").write_bytes(cli("iso", "ignition", "embed", "-i", "config.ign", "-o", "-",
                                          "live.iso", cwd=work))
    d["ignition-embed-stdout"] = out_digest(work / "stdout.iso")
    (work / "stdout.iso").unlink()

    if network:
        fresh()
        cli("iso", "network", "embed", "-k", "eth0.nmconnection", "-k", "bond0.nmconnection",
            "live.iso", cwd=work)
        d["network-embed"] = out_digest(iso)
        d["network-extract"] = sha(cli("iso", "network", "extract", "live.iso", cwd=work))
        cli("iso", "ignition", "embed", "-i", "config.ign", "live.iso", cwd=work)
        d["network+ignition"] = out_digest(iso)
        cli("iso", "ignition", "remove", "live.iso", cwd=work)
        d["network-after-ignition-remove"] = out_digest(iso)
        cli("iso", "network", "remove", "live.iso", cwd=work)
        d["network-remove"] = out_digest(iso)

    if kargs:
        fresh()
        cli("iso", "kargs", "modify", "-a", "console=ttyS0", "-d", "ignition.firstboot",
            "-r", "ignition.platform.id=metal=qemu", "live.iso", cwd=work)
        d["kargs-modify"] = out_digest(iso)
        d["kargs-show"] = sha(cli("iso", "kargs", "show", "live.iso", cwd=work))
        d["kargs-show-default"] = sha(cli("iso", "kargs", "show", "-d", "live.iso", cwd=work))
        cli("iso", "kargs", "reset", "live.iso", cwd=work)
        d["kargs-reset"] = out_digest(iso)

    fresh()
    cli("iso", "ignition", "embed", "-i", "config.ign", "live.iso", cwd=work)
    if kargs:
        cli("iso", "kargs", "modify", "-a", "quiet", "live.iso", cwd=work)
    d["inspect-json"] = sha(cli("iso", "inspect", "--json", "live.iso", cwd=work))
    d["inspect-text"] = sha(cli("iso", "inspect", "live.iso", cwd=work))
    cli("iso", "extract", "pxe", "-o", "pxe", "live.iso", cwd=work)
    for p in sorted((work / "pxe").iterdir()):
        if "initrd" in p.name:
            d[f"extract-pxe-{p.name.split('-', 1)[1]}"] = sha(p.read_bytes())
    shutil.rmtree(work / "pxe")
    cli("iso", "reset", "-o", "out.iso", "live.iso", cwd=work)
    d["reset-o"] = out_digest(work / "out.iso")
    (work / "out.iso").unlink()
    cli("iso", "reset", "live.iso", cwd=work)
    d["reset"] = out_digest(iso)
    return d


def _customize_cases(key: str, work: Path, fresh, out_digest) -> dict[str, str]:
    d: dict[str, str] = {}
    iso = work / "live.iso"
    fresh()
    cli("iso", "customize", *CUSTOMIZE_FLAGS, *LIVE_KARGS, "-o", "out.iso", "live.iso", cwd=work)
    d["customize-all-o"] = out_digest(work / "out.iso")
    d["customize-all-show"] = sha(cli("iso", "ignition", "show", "out.iso", cwd=work))
    (work / "out.iso").unlink()
    cli("iso", "customize", "--live-ignition", "live.ign", "--network-keyfile",
        "installer-test.nmconnection", "live.iso", cwd=work)
    d["customize-live-inplace"] = out_digest(iso)
    cli("customize-iso", "-f", "--dest-device", "/dev/sda", "--dest-ignition", "dest.ign",
        "live.iso", cwd=work)
    d["customize-iso-force"] = out_digest(iso)
    cli("iso", "customize", "-f", "live.iso", cwd=work)
    d["customize-force-empty"] = out_digest(iso)
    return d


def _pxe_cases(work: Path) -> dict[str, str]:
    d: dict[str, str] = {}
    initrd = live_initramfs()
    d["pxe-input-initramfs"] = sha(initrd)
    (work / "initrd.img").write_bytes(initrd)
    cli("pxe", "customize", *PXE_FLAGS, "-o", "pxe-out.img", "initrd.img", cwd=work)
    d["pxe-customize"] = sha((work / "pxe-out.img").read_bytes())
    d["pxe-customize-stdout"] = sha(cli("pxe", "customize", "--dest-device", "/dev/vda",
                                        "--dest-ignition", "dest.ign", "-o", "-", "initrd.img",
                                        cwd=work))
    cli("pxe", "ignition", "wrap", "-i", "config.ign", "-o", "ign.img", cwd=work)
    d["pxe-ignition-wrap"] = sha((work / "ign.img").read_bytes())
    d["pxe-ignition-unwrap"] = sha(cli("pxe", "ignition", "unwrap", "ign.img", cwd=work))
    cli("pxe", "network", "wrap", "-k", "eth0.nmconnection", "-k", "bond0.nmconnection",
        "-o", "net.img", cwd=work)
    d["pxe-network-wrap"] = sha((work / "net.img").read_bytes())
    d["pxe-network-unwrap"] = sha(cli("pxe", "network", "unwrap", "net.img", cwd=work))
    return d


def compute_shared(iso_dir: Path, customize_dir: Path, work: Path) -> dict[str, str]:
    """Digests of every case on the shared coreos-installer fixture ISOs (whole files)."""
    out: dict[str, str] = {}
    _inputs(work, customize_dir)
    for key, name in SHARED_ISOS.items():
        pristine = lzma.decompress((iso_dir / name).read_bytes())

        def fresh(pristine=pristine) -> None:
            (work / "live.iso").write_bytes(pristine)

        def digest(p: Path) -> str:
            return sha(p.read_bytes())

        for case, v in _iso_cases(key, work, fresh, digest).items():
            out[f"{key}/{case}"] = v
        if key in ("2022-09", "2023-03"):
            for case, v in _customize_cases(key, work, fresh, digest).items():
                out[f"{key}/{case}"] = v
    for case, v in _pxe_cases(work).items():
        out[f"pxe/{case}"] = v
    return out


def changed_sectors_digest(orig: bytes, new: Path) -> str:
    """sha256 over the 2048-byte sectors that differ from orig (same size required)."""
    data = new.read_bytes()
    if len(data) != len(orig):
        return f"size-changed:{len(data)}"
    h = hashlib.sha256()
    for off in range(0, len(data), 2048):
        if data[off:off + 2048] != orig[off:off + 2048]:
            h.update(data[off:off + 2048])
    return h.hexdigest()


def compute_liveiso(iso: Path, customize_dir: Path | None, work: Path) -> dict[str, str]:
    """Digests on the generated live ISO: changed sectors only (see the module doc)."""
    out: dict[str, str] = {}
    _inputs(work, customize_dir)
    pristine = iso.read_bytes()

    def fresh() -> None:
        (work / "live.iso").write_bytes(pristine)

    def digest(p: Path) -> str:
        return changed_sectors_digest(pristine, p)

    cases = _iso_cases("liveiso", work, fresh, digest)
    # whole extracted files and inspect's offsets depend on the kernel's size: left out
    cases = {k: v for k, v in cases.items()
             if not k.startswith("extract-pxe") and not k.startswith("inspect")}
    fresh()
    cli("iso", "ignition", "embed", "-i", "config.ign", "live.iso", cwd=work)
    cli("iso", "extract", "pxe", "-o", "pxe", "live.iso", cwd=work)
    fresh()
    cli("iso", "extract", "pxe", "-o", "pxe0", "live.iso", cwd=work)
    plain = (work / "pxe0" / "live-initrd.img").read_bytes()
    custom = (work / "pxe" / "live-initrd.img").read_bytes()
    cases["extract-pxe-appended"] = sha(custom[len(plain):])
    shutil.rmtree(work / "pxe")
    shutil.rmtree(work / "pxe0")
    fresh()
    cli("iso", "customize", "--live-ignition", "config.ign", "--network-keyfile",
        "eth0.nmconnection", "--live-karg-append", "console=ttyS0,115200", "-o", "out.iso",
        "live.iso", cwd=work)
    cases["customize-o"] = digest(work / "out.iso")
    (work / "out.iso").unlink()
    for case, v in cases.items():
        out[f"liveiso/{case}"] = v
    return out


REBUILD_CFGS = ("/isolinux/isolinux.cfg", "/EFI/fedora/grub.cfg")


def compute_rebuild(plain_iso: Path, work: Path) -> dict[str, str]:
    """The rebuild path on the generated plain live ISO: the boot configs it writes."""
    (work / "ks.cfg").write_bytes(b"# kickstart\n")
    cli("iso", "customize", "--add-file", "ks.cfg:/ks.cfg", "--karg-append",
        "inst.ks=hd:LABEL=MYISO:/ks.cfg", "--karg-append", "console=ttyS0", "--karg-delete",
        "quiet", "--volume-id", "MYISO", "-o", "rebuilt.iso", str(plain_iso), cwd=work)
    out: dict[str, str] = {}
    cmd = ["xorriso", "-no_rc", "-osirrox", "on", "-indev", str(work / "rebuilt.iso")]
    for i, p in enumerate(REBUILD_CFGS):
        cmd += ["-extract", p, str(work / f"cfg{i}")]
    subprocess.run(cmd, check=True, capture_output=True)
    for i, p in enumerate(REBUILD_CFGS):
        out[f"rebuild{p}"] = sha((work / f"cfg{i}").read_bytes())
    return out


def load() -> dict[str, str]:
    return json.loads(RECORD.read_text())


def main() -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--record", action="store_true", help="write tests/data/iso_golden.json")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "fixtures" / "coreos-installer")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    res: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as td:
        w = Path(td, "shared")
        w.mkdir()
        res.update(compute_shared(a.shared / "iso", a.shared / "customize", w))
        sys.path.insert(0, str(HERE))
        import liveiso_helpers as live

        w = Path(td, "live")
        w.mkdir()
        res.update(compute_liveiso(live.build(), None, w))
        w = Path(td, "rebuild")
        w.mkdir()
        res.update(compute_rebuild(live.build(plain=True), w))
    text = json.dumps(res, indent=1, sort_keys=True) + "\n"
    if a.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
