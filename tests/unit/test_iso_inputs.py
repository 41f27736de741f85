"""Checks of user inputs for the embed verbs: warnings by default, refusals with strict."""

from __future__ import annotations

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.iso.inputs import check_ignition, check_keyfile, keyfile_problem, read_config


@pytest.mark.parametrize("data,problem", [
    (b"[connection]\nid=eth0\n# comment\n; also\n\n[ipv4]\nmethod=auto\n", None),
    (b"[connection]\r\nid=eth0\r\n", None),
    (b"id=eth0\n[connection]\n", "line 1 col 1: key=value before the first [group]"),
    (b"# only a comment\n", "no [group]"),
    (b"[connection]\nthis is not a keyfile\n", "line 2 col 1: neither [group], key=value"),
    (b"[connection]\nid=a\x00b\n", "line 2 col 5: control character"),
    (b"[c]\n\xff\xfe", "line 2 col 1: not UTF-8 text"),
])
def test_keyfile_problem(data, problem):
    got = keyfile_problem(data)
    assert (got is None) if problem is None else (problem in got), got


def test_warn_or_refuse():
    said: list[str] = []
    check_keyfile(b"\x00junk", "k.nm", strict=False, warn=said.append)
    check_ignition(b"{", "-", strict=False, warn=said.append)
    check_ignition(b'{"ignition":{"version":"3.3.0"}}', "ok.ign", strict=False, warn=said.append)
    assert said[0].startswith("warning: k.nm: not a NetworkManager keyfile: line 1 col 1")
    assert said[1].startswith("warning: stdin: not a valid Ignition config: error at line 1 col")
    assert len(said) == 2 and all(s.endswith("(embedded anyway; --strict refuses it)") for s in said)
    with pytest.raises(InvalidConfigError, match="not a valid Ignition config") as ei:
        check_ignition(b'{"ignition":{"version":"2.2.0"}}', "v2.ign", strict=True, warn=said.append)
    assert "imagebuilder ignition validate v2.ign" in ei.value.hint


def test_read_config_is_bounded(tmp_path, monkeypatch):
    from imagebuilder.errors import UserInputError
    from imagebuilder.iso import inputs

    monkeypatch.setattr(inputs, "INPUT_LIMIT", 10)
    (tmp_path / "c").write_bytes(b"x" * 11)
    with pytest.raises(UserInputError, match="larger than the limit of 10 bytes"):
        read_config(tmp_path / "c")
