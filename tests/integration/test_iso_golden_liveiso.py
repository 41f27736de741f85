"""The ISO verbs on the project's own generated live ISOs write the bytes they wrote before
the commands were restructured (the sectors they change; see tests/iso_golden.py). Needs
only what `make setup` installs, not ../shared."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import iso_golden

REPO = Path(__file__).resolve().parents[2]


def _liveiso():
    spec = importlib.util.spec_from_file_location("make_liveiso",
                                                  REPO / "fixtures/liveiso/make_liveiso.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_iso_verbs_byte_identical_on_generated_liveiso(tmp_path):
    want = {k: v for k, v in iso_golden.load().items() if k.startswith("liveiso/")}
    got = iso_golden.compute_liveiso(_liveiso().build_liveiso(), None, tmp_path)
    assert {k: v for k, v in got.items() if want.get(k) != v} == {}
    assert set(got) == set(want)


def test_rebuild_configs_byte_identical_on_generated_plain_iso(tmp_path):
    want = {k: v for k, v in iso_golden.load().items() if k.startswith("rebuild/")}
    got = iso_golden.compute_rebuild(_liveiso().build_liveiso(plain=True), tmp_path)
    assert got == want
