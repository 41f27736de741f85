"""The start-up fast path (imagebuilder.cli.fastpath) against the typer CLI it stands in for.

Every command line is run twice on identical copies of an ISO -- fast path, then
``IMAGEBUILDER_NO_FASTPATH=1`` (typer) -- and must give the same exit status, stdout,
stderr and resulting image bytes. Command lines the fast path does not take must
fall through to typer unchanged.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuilder.cli import fastpath

CONFIG = b'{"ignition":{"version":"3.3.0"}}\n'
FIXTURE = "embed-areas-2023-03.x86_64.iso.xz"


@pytest.fixture(scope="module")
def iso_bytes(shared_fixtures) -> bytes:
    return lzma.decompress((shared_fixtures / "iso" / FIXTURE).read_bytes())


def _run(monkeypatch, capfdbinary, args, stdin: bytes, no_fastpath: bool):
    from imagebuilder.cli.main import main

    if no_fastpath:
        monkeypatch.setenv("IMAGEBUILDER_NO_FASTPATH", "1")
    else:
        monkeypatch.delenv("IMAGEBUILDER_NO_FASTPATH", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capfdbinary.readouterr()
    rc = main([str(a) for a in args])
    out, err = capfdbinary.readouterr()
    return rc, out, err


def _both(tmp_path, iso_bytes, monkeypatch, capfdbinary, make_args, *, stdin=b"", prepare=None):
    results = []
    for mode in ("fast", "typer"):
        d = tmp_path / mode
        d.mkdir()
        iso = d / "live.iso"
        iso.write_bytes(iso_bytes)
        (d / "config.ign").write_bytes(CONFIG)
        (d / "eth0.nmconnection").write_bytes(b"[connection]\nid=eth0\ntype=ethernet\n")
        if prepare:
            for args in prepare(d):
                rc, _, err = _run(monkeypatch, capfdbinary, args, b"", True)
                assert rc == 0, err
        rc, out, err = _run(monkeypatch, capfdbinary, make_args(d), stdin, mode == "typer")
        outputs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(d.iterdir()) if p.is_file()}
        results.append((rc, out.replace(str(d).encode(), b"D"), err.replace(str(d).encode(), b"D"),
                        outputs))
    assert results[0] == results[1]
    return results[0]


def _embedded(d: Path) -> list:
    return [["iso", "ignition", "embed", "-i", d / "config.ign", d / "live.iso"]]


CASES = [
    # (id, args(d), stdin, prepare(d) or None)
    ("embed", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign", d / "live.iso"],
     b"", None),
    ("embed-long-eq", lambda d: ["iso", "ignition", "embed", f"--ignition-file={d / 'config.ign'}",
                                 d / "live.iso"], b"", None),
    ("embed-stdin", lambda d: ["iso", "ignition", "embed", d / "live.iso"], CONFIG, None),
    ("embed-stdin-dash", lambda d: ["iso", "ignition", "embed", "-i", "-", d / "live.iso"],
     CONFIG, None),
    ("embed-refused", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign", d / "live.iso"],
     b"", _embedded),
    ("embed-force", lambda d: ["-v", "iso", "ignition", "embed", "-f", "-i", d / "config.ign",
                               d / "live.iso"], b"", _embedded),
    ("embed-output", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign", "-o",
                                d / "out.iso", d / "live.iso"], b"", None),
    ("embed-output-exists", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign",
                                       "--output", d / "config.ign", d / "live.iso"], b"", None),
    ("embed-missing-iso", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign",
                                     d / "nope.iso"], b"", None),
    ("embed-missing-config", lambda d: ["iso", "ignition", "embed", "-i", d / "nope.ign",
                                        d / "live.iso"], b"", None),
    ("embed-not-an-iso", lambda d: ["iso", "ignition", "embed", "-i", d / "config.ign",
                                    d / "config.ign"], b"", None),
    ("show", lambda d: ["iso", "ignition", "show", d / "live.iso"], b"", _embedded),
    ("show-none", lambda d: ["iso", "ignition", "show", d / "live.iso"], b"", None),
    ("remove", lambda d: ["iso", "ignition", "remove", d / "live.iso"], b"", _embedded),
    ("network-embed", lambda d: ["iso", "network", "embed", "-k", d / "eth0.nmconnection",
                                 d / "live.iso"], b"", None),
    ("network-remove", lambda d: ["iso", "network", "remove", d / "live.iso"], b"", None),
    ("kargs-modify", lambda d: ["iso", "kargs", "modify", "-a", "console=ttyS0", "-d",
                                "ignition.firstboot", "-r", "ignition.platform.id=metal=qemu",
                                d / "live.iso"], b"", None),
    ("kargs-modify-too-long", lambda d: ["iso", "kargs", "modify", "--append", "x" * 2000,
                                         d / "live.iso"], b"", None),
    ("kargs-show-default", lambda d: ["iso", "kargs", "show", "--default", d / "live.iso"], b"",
     None),
    ("kargs-reset", lambda d: ["iso", "kargs", "reset", d / "live.iso"], b"", None),
    ("reset", lambda d: ["iso", "reset", d / "live.iso"], b"", _embedded),
    ("customize", lambda d: ["iso", "customize", "--live-ignition", d / "config.ign",
                             "--live-karg-append", "console=ttyS0", "--dest-device", "/dev/vda",
                             "-o", d / "out.iso", d / "live.iso"], b"", None),
    ("customize-iso-force", lambda d: ["customize-iso", "-f", "--dest-ignition", d / "config.ign",
                                       d / "live.iso"], b"", _embedded),
    ("customize-refused", lambda d: ["customize-iso", "--dest-ignition", d / "config.ign",
                                     d / "live.iso"], b"", _embedded),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_path_matches_typer(case, tmp_path, iso_bytes, monkeypatch, capfdbinary):
    _id, make_args, stdin, prepare = case
    assert fastpath.parse([str(a) for a in make_args(tmp_path)]) is not None, "fast path declined"
    _both(tmp_path, iso_bytes, monkeypatch, capfdbinary, make_args, stdin=stdin, prepare=prepare)


@pytest.mark.parametrize("args", [
    [],
    ["--help"],
    ["--version"],
    ["iso"],
    ["iso", "ignition", "embed", "--help"],
    ["iso", "ignition", "embed", "-h", "x.iso"],
    ["iso", "ignition", "embed", "--bogus", "x.iso"],
    ["iso", "ignition", "embed", "-ic.ign", "x.iso"],  # attached short value
    ["iso", "ignition", "embed", "-fi", "c.ign", "x.iso"],  # clustered flags
    ["iso", "ignition", "embed", "-i"],  # missing value
    ["iso", "ignition", "embed", "-i", "--force", "x.iso"],  # value looks like an option
    ["iso", "ignition", "embed", "-i", "a", "-i", "b", "x.iso"],  # single-valued twice
    ["iso", "ignition", "embed", "--force=yes", "x.iso"],
    ["iso", "ignition", "embed", "x.iso", "y.iso"],
    ["iso", "ignition", "embed"],
    ["iso", "ignition", "embed", "--", "x.iso"],
    ["iso", "ignition", "embed", ""],
    ["iso", "network", "embed", "x.iso"],  # required -k missing
    ["iso", "inspect", "x.iso"],
    ["iso", "customize", "--add-file", "a:/b", "-o", "o.iso", "x.iso"],  # rebuild path
    ["iso", "customize", "--volume-id", "X", "-o", "o.iso", "x.iso"],
    ["-q", "iso", "ignition", "show", "x.iso"],
    ["iso", "ignition", "show", "--debug", "x.iso"],  # global option after the command
    ["build", "x.yaml"],
])
def test_fast_path_declines(args):
    assert fastpath.parse(args) is None


def test_fast_path_accepts_global_options():
    v, debug, _handler, a = fastpath.parse(["-vv", "--verbose", "--debug", "iso", "ignition", "embed",
                                            "x.iso", "--force", "--output=o.iso", "-i", "-"])
    assert (v, debug) == (3, True)
    assert a == {"ignition_file": Path("-"), "output": "o.iso", "force": True,
                 "input_iso": Path("x.iso")}


@pytest.mark.parametrize("args", [["--help"], ["iso", "ignition", "embed", "--bogus", "x.iso"]])
def test_declined_lines_behave_as_before(args, monkeypatch, capfdbinary):
    fast = _run(monkeypatch, capfdbinary, args, b"", False)
    typer_only = _run(monkeypatch, capfdbinary, args, b"", True)
    assert fast == typer_only


def test_embed_imports_no_cli_framework(tmp_path, iso_bytes):
    """The in-place embed imports no CLI framework and none of the slow stdlib modules."""
    iso = tmp_path / "live.iso"
    iso.write_bytes(iso_bytes)
    (tmp_path / "c.ign").write_bytes(CONFIG)
    code = ("import sys; from imagebuilder.cli.main import main; "
            f"rc = main(['iso', 'ignition', 'embed', '-i', {str(tmp_path / 'c.ign')!r}, {str(iso)!r}]); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'typer', 'click', 'pydantic', 'rich', 'logging', 'typing', 'tempfile', 'hashlib', "
            "'dataclasses', 'inspect'}); "
            "print(rc, heavy)")
    env = {k: v for k, v in os.environ.items() if k != "IMAGEBUILDER_NO_FASTPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0 []"
    r = subprocess.run([sys.executable, "-m", "imagebuilder", "iso", "ignition", "show", str(iso)],
                       capture_output=True, env=env)
    assert r.returncode == 0 and r.stdout == CONFIG


@pytest.mark.parametrize("fail_errno", [None, "EXDEV"])
def test_write_copy_chunked_with_writeback(tmp_path, monkeypatch, fail_errno):
    """-o's copy loop (copy_file_range chunks + writeback kicks) gives the same bytes; where
    copy_file_range is unsupported it falls back to fsutil.fast_copy."""
    import errno
    import fcntl

    from imagebuilder.iso import write as iso_write
    from imagebuilder.iso.image import Region

    src = tmp_path / "src.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    monkeypatch.setattr(iso_write, "_WRITEBACK_CHUNK", 4096)
    def no_reflink(*a):
        raise OSError(errno.EOPNOTSUPP, "no reflinks here")

    monkeypatch.setattr(fcntl, "ioctl", no_reflink)
    calls = []
    real_cfr = os.copy_file_range

    def cfr(*a):
        calls.append(a[2])
        if fail_errno:
            raise OSError(getattr(errno, fail_errno), fail_errno)
        return real_cfr(*a)

    monkeypatch.setattr(iso_write.os, "copy_file_range", cfr)
    iso_write.write_copy(src, tmp_path / "out.bin", [Region(5000, b"PATCH")])
    assert (tmp_path / "out.bin").read_bytes() == data[:5000] + b"PATCH" + data[5005:]
    assert len(calls) >= (1 if fail_errno else 300_000 // 4096)


def test_early_copy_is_removed_when_the_command_fails(tmp_path, iso_bytes, monkeypatch, capfdbinary):
    """-o starts copying before the patches exist; a refused command leaves nothing behind."""
    iso = tmp_path / "live.iso"
    iso.write_bytes(iso_bytes)
    cfg = tmp_path / "config.ign"
    cfg.write_bytes(CONFIG)
    rc, _, err = _run(monkeypatch, capfdbinary, ["iso", "ignition", "embed", "-i", cfg, iso], b"", False)
    assert rc == 0, err
    for args in (["iso", "ignition", "embed", "-i", cfg, "-o", tmp_path / "o.iso", iso],
                 ["iso", "customize", "--live-ignition", cfg, "-o", tmp_path / "o.iso", iso],
                 ["iso", "customize", "--live-ignition", tmp_path / "nope.ign", "-f", "-o",
                  tmp_path / "o.iso", iso]):
        rc, _, err = _run(monkeypatch, capfdbinary, args, b"", False)
        assert rc == 2, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.ign", "live.iso"]
    rc, _, err = _run(monkeypatch, capfdbinary, ["iso", "customize", "-f", "--live-ignition", cfg,
                                                 "-o", tmp_path / "o.iso", iso], b"", False)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.ign", "live.iso", "o.iso"]


def test_record_behaves_like_a_frozen_dataclass():
    from imagebuilder.iso._record import FrozenInstanceError, Record, factory

    class P(Record):
        a: int
        b: str = "x"
        c: dict = factory(dict)

    class Q(Record):
        a: int
        b: str = "x"
        c: dict = factory(dict)

    p = P(1)
    assert (p.a, p.b, p.c) == (1, "x", {}) and P(1).c is not p.c
    assert p == P(1, "x", {}) == P(a=1, c={}) and p != P(2) and p != Q(1)
    assert repr(P(1, "y", {"k": 1})) == "test_record_behaves_like_a_frozen_dataclass.<locals>.P(a=1, b='y', c={'k': 1})"
    assert hash(P(1, "y", None)) == hash(P(1, "y", None))
    with pytest.raises(FrozenInstanceError):
        p.a = 2
    with pytest.raises(AttributeError):
        del p.b
    for bad in (lambda: P(), lambda: P(1, "x", {}, 4), lambda: P(1, a=1), lambda: P(1, d=0)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(TypeError):
        class Bad(Record):
            a: int = 0
            b: int
