"""Hostile inputs to the Ignition toolkit: decompression bombs, absurd nesting, huge
integers, invalid Unicode. Each is a clean validation error with a position (exit 1 for
``validate``, 3 for ``show``/``merge``), never a crash (exit 70), and memory stays bounded."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import decode
from imagebuilder.ignition.parse import MAX_DEPTH, JSONSyntaxError, parse_json
from imagebuilder.ignition.validate import first_problem, validate_config

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ignition"
MiB = 1 << 20
RSS_LIMIT_KIB = 128 * 1024


def gzip_bomb(size: int) -> bytes:
    """``size`` bytes of zeros as concatenated gzip members (~1 KiB per MiB, built fast)."""
    member = gzip.compress(b"\0" * MiB, compresslevel=9, mtime=0)
    return member * (size // MiB)


def data_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


# Runs argv[2:] as its only child and writes that child's peak RSS (KiB) to argv[1]. A
# wrapper because Linux carries a process's peak RSS across fork+exec: a CLI forked straight
# from a big pytest worker would report the worker's RSS, not its own.
_RSS_WRAPPER = ("import resource, subprocess, sys; "
                "r = subprocess.run(sys.argv[2:]); "
                "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                "sys.exit(r.returncode)")


def run_measured(*args: str) -> tuple[int, bytes, bytes, int]:
    """Run the CLI; return (exit status, stdout, stderr, peak RSS in KiB of that process)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        p = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, rss.name,
                            sys.executable, "-m", "imagebuilder", *args], capture_output=True)
        return p.returncode, p.stdout, p.stderr, int(rss.read())


HOSTILE = {
    "deep-array": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": (b'{"ignition":{"version":"3.3.0"},"x":' + b'{"a":' * 100_000 + b"1"
                    + b"}" * 100_000 + b"}"),
    "huge-integer": (b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","mode":'
                     + b"9" * 5000 + b"}]}}"),
    "lone-surrogate": b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a\\ud800"}]}}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_is_a_positioned_error_never_a_crash(name, tmp_path, cli):
    path = tmp_path / f"{name}.ign"
    path.write_bytes(HOSTILE[name])
    first = first_problem(HOSTILE[name])
    assert first is not None and "line 1 col " in first
    r = cli("ignition", "validate", str(path))
    assert r.returncode == 1, r.stderr
    assert b"line 1 col " in r.stdout
    for verb in (["show"], ["show", "--json"], ["merge", str(path)]):
        r = cli("ignition", *verb, str(path))
        text = r.stdout + r.stderr
        assert r.returncode in (0, 3), (verb, r.returncode, text[-800:])
        assert b"Traceback" not in text and b"internal error" not in text
        if name != "huge-integer":  # show keeps going on a config that only fails validation
            assert r.returncode == 3 and b"line 1 col " in r.stderr, (verb, text[-800:])
    if name == "huge-integer":
        assert cli("ignition", "merge", str(path), str(path)).returncode == 3


def test_parser_limits():
    with pytest.raises(JSONSyntaxError, match="nesting depth"):
        parse_json("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2))
    parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH)  # the limit itself is fine
    with pytest.raises(JSONSyntaxError, match="lone UTF-16 surrogate") as e:
        parse_json('{"k": "ok", "s": "x\\udc00"}')
    assert (e.value.line, e.value.column) == (1, 18)
    assert parse_json('"\\ud83d\\ude00"').value == "\U0001F600"  # a proper pair is fine
    assert parse_json("1" * 5000).value == float("inf")
    r = validate_config(b'{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"a","uid":'
                        b"18446744073709551616}]}}")
    assert [(p.json_path, p.message) for p in r.errors] == [
        ("$.passwd.users.0.uid", "expected integer, got a number out of range")]


def test_first_problem():
    assert first_problem(b'{"ignition":{"version":"3.3.0"}}') is None
    assert first_problem(b'{"ignition":{"version":"3.3.0"},"foo":1}') is None  # warnings only
    assert first_problem(b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"a"}]}}') == (
        "error at $.storage.files.0.path, line 1 col 61: path not absolute")
    assert first_problem(b"not json").startswith("error at line 1 col 1: ")


def test_gunzip_stops_at_the_limit_and_streams():
    bomb = gzip_bomb(64 * MiB)
    with pytest.raises(decode.TooLargeError, match="exceeds the 8 MiB limit"):
        decode.gunzip(bomb, limit=8 * MiB)
    chunks = list(decode.iter_gunzip(gzip_bomb(4 * MiB), limit=4 * MiB))
    assert sum(map(len, chunks)) == 4 * MiB and max(map(len, chunks)) <= 256 * 1024
    with pytest.raises(InvalidConfigError, match="truncated"):
        decode.gunzip(gzip.compress(b"x" * 1000)[:-10])
    with pytest.raises(InvalidConfigError, match="not valid gzip"):
        decode.gunzip(gzip.compress(b"x") + b"junk!junk!junk!")
    assert decode.gunzip(gzip.compress(b"a") + gzip.compress(b"b")) == b"ab"
    with pytest.raises(decode.TooLargeError, match="exceeds the 4 bytes limit"):
        decode.decode_contents({"source": "data:,12345"}, limit=4)


def test_show_on_a_1gib_gzip_bomb_is_bounded(tmp_path):
    cfg = {"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/bomb", "contents": {"source": data_url(gzip_bomb(1024 * MiB)), "compression": "gzip"}},
        {"path": "/fine", "contents": {"source": "data:,hello"}}]}}
    path = tmp_path / "bomb.ign"
    path.write_text(json.dumps(cfg))
    rc, out, err, rss = run_measured("ignition", "show", str(path))
    assert rc == 0, err
    assert b"decompressed size exceeds the 256 MiB limit" in out + err
    assert b"hello" in out  # the rest of the config is still shown
    assert rss <= RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
    rc, out, err, rss = run_measured("ignition", "show", "--json", str(path))
    assert rc == 0 and rss <= RSS_LIMIT_KIB
    doc = json.loads(out)
    assert doc["files"][0]["contents"]["kind"] == "undecodable"


def test_show_summarises_large_contents_without_holding_them(tmp_path):
    big = b"line of text\n" * (200 * 1024)  # 2.5 MiB of text: size and hash, not the text
    cfg = {"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/big", "contents": {"source": data_url(gzip.compress(big)), "compression": "gzip"}}]}}
    path = tmp_path / "big.ign"
    path.write_text(json.dumps(cfg))
    rc, out, err, _ = run_measured("ignition", "show", "--json", str(path))
    contents = json.loads(out)["files"][0]["contents"]
    assert contents["size"] == len(big) and contents["large"] and "text" not in contents
    import hashlib
    assert contents["sha256"] == hashlib.sha256(big).hexdigest()


def test_merge_with_a_gzip_bomb_child_reference_is_bounded(tmp_path):
    member = gzip.compress(b"a" * MiB, compresslevel=9, mtime=0)
    child = gzip.compress(b'{"ignition":{"version":"3.3.0"},"x":"', mtime=0) + member * 1024
    cfg = {"ignition": {"version": "3.3.0", "config": {"merge": [
        {"source": data_url(child), "compression": "gzip"}]}}}
    path = tmp_path / "base.ign"
    path.write_text(json.dumps(cfg))
    other = tmp_path / "other.ign"
    other.write_text('{"ignition":{"version":"3.3.0"}}')
    rc, out, err, rss = run_measured("ignition", "merge", str(path), str(other))
    assert rc == 3, err
    assert b"ignition.config.merge[0]: decompressed size exceeds the 32 MiB limit" in err
    assert rss <= RSS_LIMIT_KIB, f"peak RSS {rss} KiB"


@pytest.mark.parametrize("config", [
    b'{"ignition":{"version":"3.3.0"},"storage":{"files":{"path":"/a"}}}',  # an object for a list
    b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"mode":420}]}}',  # no path
    b'{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"sshAuthorizedKeys":"k"},"x",1]}}',
    b'{"ignition":{"version":"3.3.0"},"systemd":{"units":[{"dropins":[{}]}]}}',
])
def test_show_reads_what_it_can_of_an_invalid_config(config):
    """Found by fuzzing: show assumed a type-valid config (AttributeError, KeyError)."""
    import io

    from rich.console import Console

    from imagebuilder.ignition.show import describe, render_text

    report = describe(config)
    assert report.warnings[0].startswith("config is not valid")
    out = io.StringIO()
    render_text(report.doc, Console(file=out, width=100))
    json.dumps(report.doc)


def test_unparsable_urls_are_validation_errors():
    """Found by fuzzing: an unbalanced '[' in a source with HTTP headers raised ValueError."""
    cfg = {"ignition": {"version": "3.3.0", "proxy": {"httpsProxy": "http://[x"}},
           "storage": {"files": [{"path": "/a", "contents": {
               "source": "http://[x", "httpHeaders": [{"name": "a", "value": "b"}]}}]}}
    errors = [(p.json_path, p.message) for p in validate_config(json.dumps(cfg).encode()).errors]
    assert ("$.ignition.proxy.httpsProxy", "unable to parse url") in errors
    assert ("$.storage.files.0.contents.source", "unable to parse url") in errors


def test_show_with_a_certificate_whose_fields_do_not_parse():
    """Found by fuzzing: cryptography parses certificates lazily, so reading the issuer of a
    damaged one raised ValueError after loading succeeded."""
    from imagebuilder.ignition.show import describe

    data = (FIXTURES / "fuzz" / "show-cert-lazy-issuer.ign").read_bytes()
    report = describe(data)
    assert any("certificate #1 cannot be parsed" in w for w in report.warnings), report.warnings
