"""The shared plumbing: run(), error taxonomy/exit codes, atomic writes."""

from __future__ import annotations

import os

import pytest

from imagebuilder import errors, fsutil
from imagebuilder.run import require, run


def test_run_captures_and_raises_with_stderr():
    proc = run(["sh", "-c", "echo out; echo err >&2"])
    assert proc.stdout == b"out\n"
    with pytest.raises(errors.ToolError) as ei:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    assert ei.value.returncode == 3
    assert "boom" in ei.value.stderr
    assert "boom" in str(ei.value)
    assert ei.value.argv[0] == "sh"


def test_missing_tool_names_package():
    with pytest.raises(errors.ToolMissingError) as ei:
        run(["definitely-not-a-tool-xyz"])
    assert ei.value.exit_code == 5
    with pytest.raises(errors.ToolMissingError) as ei:
        os.environ["PATH"], old = "/nonexistent", os.environ["PATH"]
        try:
            require("xorriso")
        finally:
            os.environ["PATH"] = old
    assert "apt-get install xorriso" in ei.value.hint


def test_atomic_output_no_clobber_and_cleanup(tmp_path):
    dest = tmp_path / "out.bin"
    fsutil.write_atomic(dest, b"one")
    assert dest.read_bytes() == b"one"
    with pytest.raises(errors.UserInputError):
        fsutil.write_atomic(dest, b"two")
    assert dest.read_bytes() == b"one"
    fsutil.write_atomic(dest, b"two", force=True)
    assert dest.read_bytes() == b"two"
    with pytest.raises(RuntimeError):
        with fsutil.atomic_output(tmp_path / "x.bin") as (_tmp, f):
            f.write(b"partial")
            raise RuntimeError("fail midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_copy_file_identical(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    dst = tmp_path / "dst"
    with open(src, "rb") as s, open(dst, "wb") as d:
        method = fsutil.copy_file(s, d)
    assert method in {"reflink", "copy_file_range", "readwrite"}
    assert dst.read_bytes() == src.read_bytes()


def test_cli_version_and_exit_codes(cli):
    r = cli("--version")
    assert r.returncode == 0 and b"imagebuilder" in r.stdout
    r = cli("no-such-command")
    assert r.returncode == 2
