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


# --------------------------------------------------------------------------- differential fuzzing

_VALUES = ["", "/", "rel", "/a//b", "/a/", "/ok", "x.service", "x.conf", 0, 1, -1, 4096, 493, True, False,
           None, "data:,x", "data:x", "http://h/x", "ftp://x", "sha512-" + "a" * 128, "sha256-" + "b" * 64,
           "sha512-zz", "gzip", "xz", "ext4", "xfs", "none", "swap", "raid1", "raid0", [], {}, ["/dev/a"],
           ["a", "a"], "00000000-0000-4000-a000-000000000001", "a:b", "x" * 50, "[Unit]\nA=b\n", "[Unit",
           "tpm2", "/etc/systemd/system/x.service"]
_KEYS = ["path", "mode", "overwrite", "contents", "source", "verification", "hash", "compression", "name",
         "device", "format", "label", "target", "hard", "level", "devices", "spares", "number", "startMiB",
         "sizeMiB", "shouldExist", "guid", "typeGuid", "enabled", "mask", "dropins", "tpm2", "tang", "url",
         "thumbprint", "custom", "pin", "config", "user", "id", "wipeFilesystem", "httpHeaders", "append"]


def _containers(x, acc):
    if isinstance(x, (dict, list)):
        acc.append(x)
        for v in (x.values() if isinstance(x, dict) else x):
            _containers(v, acc)
    return acc


def _mutate(config: dict, rng) -> dict:
    import copy

    c = copy.deepcopy(config)
    for _ in range(rng.randint(1, 3)):
        node = rng.choice([n for n in _containers(c, []) if n is not c.get("ignition")])
        if isinstance(node, dict):
            keys = [k for k in node if k not in ("ignition", "version")]
            op = rng.random()
            if op < 0.4 and keys:
                node[rng.choice(keys)] = copy.deepcopy(rng.choice(_VALUES))
            elif op < 0.6 and keys:
                del node[rng.choice(keys)]
            else:
                node[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
        elif node and rng.random() < 0.5:
            node.append(copy.deepcopy(rng.choice(node)))
        elif node:
            node.pop(rng.randrange(len(node)))
    if rng.random() < 0.3 and isinstance(c.get("ignition"), dict):
        c["ignition"]["version"] = rng.choice(["3.0.0", "3.1.0", "3.2.0", "3.3.0"])
    return c


def test_differential_fuzz_against_ignition_validate(ignition_validate, tmp_path):
    """Mutate the 3.0-3.3 corpus configs at random (fixed seed) and require the same verdict,
    the same first error and the same set of path-bearing errors (with line and column)."""
    import random

    rng = random.Random(2026)
    seeds = []
    for name in ORACLE_CASES:
        try:
            seeds.append(json.loads((CORPUS / name).read_text()))
        except ValueError:
            continue
    seeds = [s for s in seeds if isinstance(s.get("ignition"), dict)
             and s["ignition"].get("version") in ("3.0.0", "3.1.0", "3.2.0", "3.3.0")]
    target = tmp_path / "fuzz.ign"
    checked = 0
    for _ in range(200):
        data = json.dumps(_mutate(rng.choice(seeds), rng), indent=1).encode()
        target.write_bytes(data)
        proc = run([ignition_validate, target], check=False, text=True)
        report = validate_config(data)
        context = f"config: {data.decode()}\nignition-validate:\n{proc.stdout}{proc.stderr}\nours:\n" + \
            "\n".join(p.format() for p in report.problems)
        assert report.valid == (proc.returncode == 0), context
        theirs = re.findall(r"^error at (\$[^,]*), line (\d+) col (\d+): ", proc.stdout, re.M)
        if report.errors and report.errors[0].kind == "semantic":
            mine = [(p.json_path, str(p.line), str(p.column)) for p in report.errors]
            assert mine == theirs, context
        elif report.errors:
            assert not theirs, context
        checked += 1
    assert checked == 200
