"""verify and diff on a real build of the tiny image (built once; the variant is derived with
customize-image, not rebuilt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuilder.repro.diff import diff_paths
from imagebuilder.repro.verify import verify_outdir

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "fixtures/images/tiny.yaml"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagebuilder"
    return Path(os.environ.get("IMAGEBUILDER_TEST_CACHE", default))


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repro-tiny") / "out"
    r = subprocess.run([sys.executable, "-m", "imagebuilder", "build", str(TINY), "-o", str(out),
                        "--cache", str(_cache()), "-q"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def copy_outdir(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_meta(d: Path, change) -> None:
    m = json.loads((d / "meta.json").read_text())
    change(m)
    (d / "meta.json").write_text(json.dumps(m, indent=2))


def test_verify_reads_back_table_commit_and_kargs(tiny_out, tmp_path):
    rep = verify_outdir(tiny_out)
    assert rep.ok, rep.problems
    assert rep.artifacts == 1 and "image tiny.x86_64.raw" in rep.checked

    d = copy_outdir(tiny_out, tmp_path / "guid")
    edit_meta(d, lambda m: m["partition_table"]["partitions"][2].update(
        guid="00000000-0000-4000-8000-000000000000"))
    probs = verify_outdir(d).problems
    assert any("partition 3 guid" in p and "differs from meta.json's 00000000-" in p for p in probs), probs

    d = copy_outdir(tiny_out, tmp_path / "commit")
    edit_meta(d, lambda m: m.update(ostree={**(m.get("ostree") or {}), "commit": "f" * 64}))
    probs = verify_outdir(d).problems
    assert any("deployed OSTree commit" in p for p in probs), probs

    d = copy_outdir(tiny_out, tmp_path / "fs")
    edit_meta(d, lambda m: m["partition_table"]["partitions"][3]["filesystem"].update(label="ROOT"))
    probs = verify_outdir(d).problems
    assert probs == [f"{d / 'tiny.x86_64.raw'}: partition 4 filesystem label root differs from "
                     "meta.json's ROOT"], probs


def test_diff_names_the_changed_boot_files_and_fields(tiny_out, tmp_path, cli):
    b = copy_outdir(tiny_out, tmp_path / "b")
    r = cli("customize-image", str(b / "tiny.x86_64.raw"), "--karg-append", "repro.test=1")
    assert r.returncode == 0, r.stderr
    r = cli("diff", str(tiny_out), str(b))
    out = r.stdout.decode()
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in out.splitlines() if "partition 3 (boot) (ext4): /" in ln]
    changed = {(ln.split(": ")[2], ln.split(": ")[3]) for ln in lines}
    assert ("/loader.1/entries/ostree-1-tinyos.conf", "sha256") in changed, out
    assert ("/loader.1/entries/ostree-1-tinyos.conf", "size") in changed, out
    assert ("/grub/grub.cfg", "sha256") in changed, out
    # nothing outside the boot partition, and meta.json is the same file
    assert not [ln for ln in out.splitlines() if ln.startswith(("meta.json", "manifest.json"))]
    assert "partition 4" not in out and "partition 2" not in out
    # verify notices the image no longer matches its meta.json
    assert not verify_outdir(b, images=False).ok
    assert diff_paths(tiny_out, copy_outdir(tiny_out, tmp_path / "same")).identical
