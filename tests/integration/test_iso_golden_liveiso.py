"""The ISO verbs on the project's own generated live ISOs write the bytes they wrote before
the commands were restructured (the sectors they change; see tests/iso_golden.py). Needs
only what `make setup` installs, not ../shared."""

from __future__ import annotations

import iso_golden
import liveiso_helpers as live


def test_iso_verbs_byte_identical_on_generated_liveiso(tmp_path):
    want = {k: v for k, v in iso_golden.load().items() if k.startswith("liveiso/")}
    got = iso_golden.compute_liveiso(live.build(), None, tmp_path)
    assert {k: v for k, v in got.items() if want.get(k) != v} == {}
    assert set(got) == set(want)


def test_rebuild_configs_byte_identical_on_generated_plain_iso(tmp_path):
    want = {k: v for k, v in iso_golden.load().items() if k.startswith("rebuild/")}
    got = iso_golden.compute_rebuild(live.build(plain=True), tmp_path)
    assert got == want
