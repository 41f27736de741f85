"""Every Butane corpus output of Ignition spec 3.0.0 – 3.3.0 passes Debian's real
``ignition-validate`` (Ignition 2.14, which knows those specs), as what we translate
must be accepted by Ignition itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagebuilder.butane.translate import translate
from imagebuilder.run import run

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "butane"
ORACLE_SPECS = {"3.0.0", "3.1.0", "3.2.0", "3.3.0"}


def translated(bu: Path) -> dict:
    args = " ".join(ln.split(":", 1)[1] for ln in bu.read_text().splitlines() if ln.startswith("# args:"))
    result = translate(bu.read_bytes(), source=bu.name, files_dir=CORPUS / "files", raw=True,
                       experimental="--experimental" in args)
    assert result.config is not None, [p.format() for p in result.problems]
    return result.config


CASES = [p for p in sorted(CORPUS.glob("*.bu")) if translated(p)["ignition"]["version"] in ORACLE_SPECS]


def test_enough_cases_for_the_oracle():
    assert len(CASES) >= 15
    assert {translated(p)["ignition"]["version"] for p in CASES} == ORACLE_SPECS


@pytest.mark.parametrize("bu", CASES, ids=[p.stem for p in CASES])
def test_ignition_validate_accepts_the_translation(bu, tmp_path):
    out = tmp_path / f"{bu.stem}.ign"
    out.write_text(json.dumps(translated(bu)))
    res = run(["ignition-validate", str(out)], check=False, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
