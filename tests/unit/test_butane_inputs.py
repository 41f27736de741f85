"""A Butane config is accepted wherever an Ignition config is: ``iso ignition embed -i``,
``iso customize --dest-ignition/--live-ignition`` (and ``pxe customize``), ``pxe ignition
wrap``. What is embedded is the translated Ignition JSON."""

from __future__ import annotations

import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition.decode import decode_data_url
from imagebuilder.iso import customize as cz
from imagebuilder.iso.customize import Customizations

BUTANE = (b"variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /etc/motd\n"
          b"      contents:\n        inline: from butane\n")


def translated() -> dict:
    from imagebuilder.butane.translate import translate

    return translate(BUTANE).config


def ib(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagebuilder", *map(str, args)], input=input,
                          capture_output=True)


@pytest.fixture
def iso(shared_fixtures, tmp_path) -> Path:
    p = tmp_path / "live.iso"
    p.write_bytes(lzma.decompress((shared_fixtures / "iso" / "embed-areas-2023-03.x86_64.iso.xz").read_bytes()))
    return p


def test_iso_ignition_embed_translates_butane(iso, tmp_path):
    bu = tmp_path / "live.bu"
    bu.write_bytes(BUTANE)
    r = ib("iso", "ignition", "embed", "-i", bu, iso)
    assert r.returncode == 0, r.stderr
    shown = ib("iso", "ignition", "show", iso)
    assert json.loads(shown.stdout) == translated()
    # from stdin too: recognised by its first key
    r = ib("iso", "ignition", "embed", "-f", iso, input=BUTANE)
    assert r.returncode == 0, r.stderr
    assert json.loads(ib("iso", "ignition", "show", iso).stdout) == translated()
    # a Butane error fails with its YAML position, and the ISO is left alone
    bad = tmp_path / "bad.bu"
    bad.write_bytes(BUTANE.replace(b"path: /etc/motd", b"path: etc/motd"))
    r = ib("iso", "ignition", "embed", "-f", "-i", bad, iso)
    assert r.returncode == 3
    assert b"bad.bu: Butane config: error at $.storage.files.0.path, line 5 col 13: path not absolute" in r.stderr
    assert json.loads(ib("iso", "ignition", "show", iso).stdout) == translated()


def test_iso_customize_dest_and_live_butane(tmp_path):
    dest = tmp_path / "dest.bu"
    dest.write_bytes(BUTANE)
    live_bu = tmp_path / "live.bu"
    live_bu.write_bytes(BUTANE.replace(b"/etc/motd", b"/etc/live-motd"))
    cfg = json.loads(cz.build_live_config(Customizations(dest_ignition=(str(dest),),
                                                         live_ignition=(str(live_bu),))))
    files = {f["path"]: f["contents"] for f in cfg["storage"]["files"]}
    raw = decode_data_url(files["/etc/coreos/dest.ign"]["source"])
    if files["/etc/coreos/dest.ign"].get("compression") == "gzip":
        raw = gzip.decompress(raw)
    assert json.loads(raw) == translated()  # one dest config: embedded as translated
    (merge,) = cfg["ignition"]["config"]["merge"]
    live_cfg = json.loads(gzip.decompress(decode_data_url(merge["source"])))
    assert live_cfg["storage"]["files"][0]["path"] == "/etc/live-motd"
    bad = tmp_path / "bad.bu"
    bad.write_bytes(b"variant: fcos\nversion: 1.4.0\nfoo: [\n")
    with pytest.raises(InvalidConfigError, match=r"bad\.bu: Butane config: error at line 4 col 1"):
        cz.build_live_config(Customizations(dest_ignition=(str(bad),)))


def test_pxe_ignition_wrap_translates_butane(tmp_path):
    bu = tmp_path / "c.bu"
    bu.write_bytes(BUTANE)
    out = tmp_path / "ign.img"
    r = ib("pxe", "ignition", "wrap", "-i", bu, "-o", out)
    assert r.returncode == 0, r.stderr
    r = ib("pxe", "ignition", "unwrap", out)
    assert r.returncode == 0 and json.loads(r.stdout) == translated()


def test_butane_fixtures_of_coreos_installer_as_live_and_dest_configs(shared_fixtures):
    """coreos-installer's own customize test feeds Butane configs through butane first; here
    the .bu files go in directly and give what their butane-made .ign twins give."""
    fx = shared_fixtures / "customize"

    def built(ext: str) -> dict:
        return json.loads(cz.build_live_config(Customizations(
            live_ignition=(str(fx / f"live.{ext}"), str(fx / f"live-2.{ext}")),
            dest_ignition=(str(fx / f"dest.{ext}"), str(fx / f"dest-2.{ext}")))))

    def configs(cfg: dict) -> list:
        merges = [json.loads(gzip.decompress(decode_data_url(m["source"]))) for m in cfg["ignition"]["config"]["merge"]]
        dest = next(f for f in cfg["storage"]["files"] if f["path"] == "/etc/coreos/dest.ign")
        raw = decode_data_url(dest["contents"]["source"])
        inner = json.loads(gzip.decompress(raw) if dest["contents"].get("compression") == "gzip" else raw)
        return merges + [json.loads(gzip.decompress(decode_data_url(m["source"])))
                         for m in inner["ignition"]["config"]["merge"]]

    assert configs(built("bu")) == configs(built("ign"))
