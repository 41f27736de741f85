"""The ISO/PXE verbs write exactly the bytes they wrote before the commands were restructured
(digests recorded in tests/data/iso_golden.json; see tests/iso_golden.py)."""

from __future__ import annotations

import pytest

import iso_golden


@pytest.mark.slow  # ~130 CLI runs
def test_iso_verbs_byte_identical_on_shared_fixtures(shared_fixtures, tmp_path):
    want = {k: v for k, v in iso_golden.load().items()
            if not k.startswith(("liveiso/", "rebuild/"))}
    got = iso_golden.compute_shared(shared_fixtures / "iso", shared_fixtures / "customize", tmp_path)
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if want[k] != v} == {}
