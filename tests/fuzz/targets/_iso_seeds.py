"""Small seed inputs for the ISO and initrd fuzz targets, generated (not checked in):
CoreOS-style ISOs of a few dozen KiB in every embed-area layout, and initrds in every
compression."""

from __future__ import annotations

import functools
import gzip
import io
import json
import lzma
import tempfile
from pathlib import Path

from imagebuilder.iso.cpio import Member, newc_archive, write_initrd

CONFIG = b'{"ignition":{"version":"3.3.0"}}\n'
DEFAULT = "quiet ignition.firstboot ignition.platform.id=metal"
_PAD = 64


def _cfg() -> tuple[bytes, int, int]:
    text = f"linux /vmlinuz {DEFAULT}\n" + "#" * _PAD + " COREOS_KARG_EMBED_AREA\n"
    return text.encode(), len("linux /vmlinuz "), len(DEFAULT) + 1 + _PAD


def _iso(files: dict[str, bytes], system_area: dict[int, bytes] | None = None) -> bytes:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident="FUZZ")
    for d in sorted({p.rsplit("/", 1)[0] for p in files if p.count("/") > 1}):
        iso.add_directory(d)
    for path, data in sorted(files.items()):
        iso.add_fp(io.BytesIO(data), len(data), path + ";1")
    out = io.BytesIO()
    iso.write_fp(out)
    data = bytearray(out.getvalue())
    for off, b in (system_area or {}).items():
        data[off:off + len(b)] = b
    return bytes(data)


def _initrds() -> dict[str, bytes]:
    arc = newc_archive({"config.ign": Member(CONFIG),
                        "etc/coreos-firstboot-network/eth0.nmconnection":
                            Member(b"[connection]\nid=eth0\n", 0o100600)})
    out = {"xz": write_initrd({"config.ign": Member(CONFIG)}), "plain": arc,
           "gzip": gzip.compress(arc, mtime=0),
           "xz-lzma": lzma.compress(arc, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
           "concat": gzip.compress(arc, mtime=0) + b"\0" * 3 + arc}
    try:
        import zstandard

        out["zstd"] = zstandard.ZstdCompressor().compress(arc)
    except ImportError:
        pass
    return out


@functools.cache
def seed_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="imagebuilder-fuzz-seeds-"))
    cfg, off, size = _cfg()
    feats = json.dumps({"installer-config": True, "live-initrd-network": True,
                        "installer-config-directives": {"console": True}}).encode()
    kargs = json.dumps({"default": DEFAULT, "size": size,
                        "files": [{"path": "EFI/GRUB.CFG", "offset": off}]}).encode()
    area = bytearray(4096)
    ign = write_initrd({"config.ign": Member(CONFIG)})
    area[:len(ign)] = ign
    isos = {
        "igninfo": {"/COREOS/IGNINFO.JSO": json.dumps({"file": "images/ignition.img"}).encode(),
                    "/COREOS/KARGS.JSO": kargs, "/COREOS/FEATURES.JSO": feats,
                    "/EFI/GRUB.CFG": cfg, "/IMAGES/IGNITION.IMG": bytes(4096)},
        "embedded": {"/IMAGES/IGNITION.IMG": bytes(area), "/COREOS/KARGS.JSO": kargs,
                     "/EFI/GRUB.CFG": cfg},
        "offset": {"/COREOS/IGNINFO.JSO": json.dumps(
            {"file": "images/cdboot.img", "offset": 512, "length": 2048}).encode(),
            "/IMAGES/CDBOOT.IMG": bytes(4096)},
        "plain": {"/BOOT/GRUB.CFG": cfg},
    }
    for name, files in isos.items():
        (d / f"{name}.iso").write_bytes(_iso(files))
    # legacy System Area headers: coreiso+ (offset, length) and coreKarg (size, default, areas)
    plain = _iso({"/EFI/GRUB.CFG": cfg, "/IMAGES/AREA.IMG": bytes(4096)})
    # (offsets inside the ISO are found after writing: the area is the last file)
    img_off = len(plain) - 4096 - (len(plain) % 2048)
    legacy = bytearray(plain)
    legacy[32744:32768] = b"coreiso+" + img_off.to_bytes(8, "little") + (4096).to_bytes(8, "little")
    gpos = bytes(legacy).find(cfg)
    hdr = b"coreKarg" + size.to_bytes(8, "little") + (gpos + off).to_bytes(8, "little")
    hdr += (gpos + off).to_bytes(8, "little") + bytes(40)
    legacy[32672:32672 + len(hdr)] = hdr
    (d / "legacy.iso").write_bytes(bytes(legacy))
    for name, data in _initrds().items():
        (d / f"initrd-{name}.img").write_bytes(data)
    return d
