"""Compare our validator with the real ``ignition-validate`` on the corpus.

For every case in ``fixtures/ignition/validate`` whose declared version
``ignition-validate`` 2.14 understands (3.0.0–3.3.0, plus configs it rejects
for their version or syntax), run it and require the same verdict and the same
JSON path for the first error. Cases for 3.4.0–3.6.0 (newer than that
ignition-validate) are checked against ``EXPECTED.json``, which every case has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imagebuilder.ignition.validate import validate_config
from imagebuilder.run import run, which

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "ignition" / "validate"
EXPECTED = json.loads((CORPUS / "EXPECTED.json").read_text())
CASES = sorted(p.name for p in CORPUS.glob("*.ign"))
NEWER_THAN_ORACLE = {"3.4.0", "3.5.0", "3.6.0"}  # ignition-validate 2.14 knows 3.0.0-3.3.0


def declared_version(name: str) -> str | None:
    try:
        return json.loads((CORPUS / name).read_text())["ignition"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


ORACLE_CASES = [c for c in CASES if declared_version(c) not in NEWER_THAN_ORACLE]
NEWER_CASES = [c for c in CASES if declared_version(c) in NEWER_THAN_ORACLE]
_FIRST_ERROR = re.compile(r"^error at (\$[^,]*), line \d+ col \d+: ", re.M)


def ours(name: str):
    report = validate_config((CORPUS / name).read_bytes(), source=name)
    first = report.errors[0] if report.errors else None
    return report, first


def test_corpus_size_and_index():
    assert len(CASES) >= 45
    assert set(EXPECTED) == set(CASES), "EXPECTED.json must list exactly the corpus files"
    assert len(ORACLE_CASES) >= 40
    for v in ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"):
        assert any(c.startswith(f"valid-{v}") for c in CASES), f"no valid {v} case"


@pytest.mark.parametrize("name", CASES)
def test_matches_expected(name):
    report, first = ours(name)
    exp = EXPECTED[name]
    assert report.valid == exp["valid"], [p.format() for p in report.problems]
    assert (first.json_path if first else None) == exp["first_error_path"]
    assert (first.kind if first else None) == exp["first_error_kind"]
    assert name.startswith("err-") != report.valid, "case name must say err-/valid-/warn-"
    if name.startswith("warn-"):
        assert report.warnings


@pytest.fixture(scope="module")
def ignition_validate() -> str:
    tool = which("ignition-validate")
    if tool is None:
        pytest.skip("ignition-validate not installed (apt-get install ignition)")
    return tool


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_agrees_with_ignition_validate(name, ignition_validate):
    proc = run([ignition_validate, CORPUS / name], check=False, text=True)
    out = proc.stdout + proc.stderr
    oracle_valid = proc.returncode == 0
    report, first = ours(name)
    assert report.valid == oracle_valid, f"ignition-validate said:\n{out}\nwe said:\n" + "\n".join(
        p.format() for p in report.problems)
    if oracle_valid:
        return
    m = _FIRST_ERROR.search(out)
    if m:
        assert first.kind == "semantic"
        assert first.json_path == m.group(1), out
    else:
        # JSON syntax, type and version errors: ignition-validate prints no JSON path
        assert first.kind in ("syntax", "type", "version"), out
        assert "error at line" in out or "couldn't parse config" in out


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_error_lines_match_ignition_validate(name, ignition_validate):
    """Every path-bearing error ignition-validate reports, we report too, at the same line/col."""
    proc = run([ignition_validate, CORPUS / name], check=False, text=True)
    theirs = set(re.findall(r"^error at (\$[^,]*), line (\d+) col (\d+): ", proc.stdout, re.M))
    report, _ = ours(name)
    mine = {(p.json_path, str(p.line), str(p.column)) for p in report.errors if p.path is not None}
    assert theirs <= mine, f"missing: {theirs - mine}"


def test_newer_versions_are_covered():
    assert len(NEWER_CASES) >= 8
