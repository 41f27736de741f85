"""The table-built parser of the iso/pxe commands (imagebuilder.cli.argspec): syntax, usage
errors, help, the customize flag table, and what an in-place embed imports."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from imagebuilder.cli import argspec, iso as iso_cli, pxe as pxe_cli
from imagebuilder.cli.argspec import UsageError, format_help, parse
from imagebuilder.iso.flags import CUSTOMIZE_FLAGS, Customizations

EMBED = next(c for c in iso_cli.COMMANDS if c.words == ("iso", "ignition", "embed"))
MODIFY = next(c for c in iso_cli.COMMANDS if c.words == ("iso", "kargs", "modify"))
CUSTOMIZE = next(c for c in iso_cli.COMMANDS if c.words == ("iso", "customize"))
PXE_CUSTOMIZE = next(c for c in pxe_cli.COMMANDS if c.words == ("pxe", "customize"))


@pytest.mark.parametrize("argv,expected", [
    (["x.iso"], {"ignition_file": None, "output": None, "force": False, "iso": "x.iso"}),
    (["-i", "c.ign", "x.iso"], {"ignition_file": "c.ign"}),
    (["--ignition-file=c.ign", "x.iso"], {"ignition_file": "c.ign"}),
    (["-ic.ign", "x.iso"], {"ignition_file": "c.ign"}),
    (["-fi", "c.ign", "x.iso"], {"ignition_file": "c.ign", "force": True}),
    (["-fic.ign", "x.iso"], {"ignition_file": "c.ign", "force": True}),
    (["-i", "-", "x.iso", "--force"], {"ignition_file": "-", "force": True}),
    (["--", "-x.iso"], {"iso": "-x.iso"}),
    (["-o", "-", "x.iso"], {"output": "-"}),
    (["--strict", "x.iso"], {"strict": True}),
])
def test_parse(argv, expected):
    got = parse(EMBED, argv)
    assert {k: got[k] for k in expected} == expected


def test_repeatable_options_keep_their_order():
    got = parse(MODIFY, ["-a", "x", "--append=y", "-d", "q", "-a", "z", "i.iso"])
    assert got["append"] == ["x", "y", "z"] and got["delete"] == ["q"]


@pytest.mark.parametrize("argv,message", [
    ([], "missing argument ISO"),
    (["x.iso", "y.iso"], "unexpected argument 'y.iso'"),
    (["--bogus", "x.iso"], "no such option: --bogus"),
    (["--forc", "x.iso"], "did you mean --force"),
    (["-z", "x.iso"], "no such option: -z"),
    (["-i"], "option --ignition-file needs a value"),
    (["-i", "a", "-i", "b", "x.iso"], "option --ignition-file given more than once"),
    (["--force=yes", "x.iso"], "option --force takes no value"),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message) as ei:
        parse(EMBED, argv)
    assert ei.value.exit_code == 2


def test_required_option():
    net = next(c for c in iso_cli.COMMANDS if c.words == ("iso", "network", "embed"))
    with pytest.raises(UsageError, match="missing option --keyfile"):
        parse(net, ["x.iso"])


@pytest.mark.parametrize("cmd", iso_cli.COMMANDS + pxe_cli.COMMANDS, ids=lambda c: c.name)
def test_help_of_every_command(cmd):
    text = format_help(cmd)
    assert text.startswith(f"Usage: imagebuilder {cmd.name} [OPTIONS]")
    assert "<bool>" not in text and "{" not in text and " ." not in text
    for o in cmd.options:
        assert o.long in text


def test_help_says_where_the_config_comes_from():
    text = " ".join(format_help(EMBED).split())
    assert "Ignition config to embed ('-' or left out: read from stdin)." in text


def test_customize_flags_are_declared_once():
    """The table makes the options of iso customize, customize-iso and pxe customize, and
    the fields of Customizations."""
    iso_opts = {o.long for o in CUSTOMIZE.options}
    pxe_opts = {o.long for o in PXE_CUSTOMIZE.options}
    for f in CUSTOMIZE_FLAGS:
        assert f.option in iso_opts
        assert (f.option in pxe_opts) is (not f.iso_only)
    assert set(Customizations.__slots__) == {f.field for f in CUSTOMIZE_FLAGS}
    alias = next(c for c in iso_cli.COMMANDS if c.words == ("customize-iso",))
    assert [o.names for o in alias.options] == [o.names for o in CUSTOMIZE.options]
    values = parse(CUSTOMIZE, ["--dest-device", "/dev/vda", "--live-karg-append", "a",
                               "--live-karg-append", "b", "x.iso"])
    c = iso_cli.customizations(values, iso=True)
    assert c == Customizations(dest_device="/dev/vda", live_karg_append=("a", "b"))


def _main(args, capfdbinary, monkeypatch, stdin=b""):
    from imagebuilder.cli.main import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capfdbinary.readouterr()
    rc = main(list(args))
    out, err = capfdbinary.readouterr()
    return rc, out.decode(), err.decode()


def test_usage_error_through_main(capfdbinary, monkeypatch):
    rc, out, err = _main(["iso", "ignition", "embed", "--bogus", "x.iso"], capfdbinary, monkeypatch)
    assert rc == 2 and out == ""
    assert err.splitlines() == [
        "Usage: imagebuilder iso ignition embed [OPTIONS] ISO",
        "error: iso ignition embed: no such option: --bogus",
        "hint: see 'imagebuilder iso ignition embed --help'"]


def test_groups_and_unknown_commands(capfdbinary, monkeypatch):
    rc, out, _ = _main(["iso"], capfdbinary, monkeypatch)
    assert rc == 2 and "Commands:" in out and "\n  customize " in out
    assert "\n  embed " not in out and "\n  show " not in out  # the hidden deprecated ones
    rc, out, _ = _main(["iso", "--help"], capfdbinary, monkeypatch)
    assert rc == 0 and "ignition" in out
    rc, out, err = _main(["iso", "kargz", "x.iso"], capfdbinary, monkeypatch)
    assert rc == 2 and "no such command 'kargz' (did you mean kargs?)" in err
    rc, out, _ = _main(["pxe", "ignition"], capfdbinary, monkeypatch)
    assert rc == 2 and "wrap" in out and "unwrap" in out
    rc, out, _ = _main(["-v", "iso", "kargs", "show", "--help"], capfdbinary, monkeypatch)
    assert rc == 0 and "--default" in out


def test_main_help_lists_the_table_commands():
    r = subprocess.run([sys.executable, "-m", "imagebuilder", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    for word in ("iso", "pxe", "customize-iso"):
        assert f" {word} " in r.stdout
    assert "<bool>" not in r.stdout


def test_typer_forwarders_reach_the_same_commands(capfdbinary, monkeypatch):
    """`imagebuilder --debug iso ...` through typer (a global option argspec does not take
    first) still runs the table command."""
    from imagebuilder.cli.main import get_app

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    capfdbinary.readouterr()
    with pytest.raises(SystemExit) as ei:
        get_app()(args=["iso", "kargs", "show", "--help"], prog_name="imagebuilder")
    out, _ = capfdbinary.readouterr()
    assert ei.value.code == 0 and b"Usage: imagebuilder iso kargs show" in out


def test_embed_imports_no_cli_framework(tmp_path, shared_fixtures):
    """The in-place embed imports no CLI framework, no OpenSSL and no temp-file machinery."""
    import lzma

    iso = tmp_path / "live.iso"
    iso.write_bytes(lzma.decompress(
        (shared_fixtures / "iso" / "embed-areas-2023-03.x86_64.iso.xz").read_bytes()))
    (tmp_path / "c.ign").write_bytes(b'{"ignition":{"version":"3.3.0"}}\n')
    # modules loaded before main() (site hooks of the host may import e.g. tempfile) don't count
    code = ("import sys; before = set(sys.modules); from imagebuilder.cli.main import main; "
            f"rc = main(['iso', 'ignition', 'embed', '-i', {str(tmp_path / 'c.ign')!r}, {str(iso)!r}]); "
            "heavy = sorted({m.split('.')[0] for m in set(sys.modules) - before} & "
            "{'typer', 'click', 'pydantic', 'rich', 'logging', 'tempfile', 'hashlib', 'yaml'}); "
            "ours = sorted(m for m in sys.modules if m in ('imagebuilder.iso.customize', "
            "'imagebuilder.iso.rebuild', 'imagebuilder.kargs')); "
            "print(rc, heavy, ours)")
    env = {k: v for k, v in os.environ.items() if k != "IMAGEBUILDER_NO_FASTPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0 [] []"


def test_stdin_notice_only_on_a_terminal(tmp_path):
    """With a terminal on stdin, embed says it reads the config from there."""
    master, slave = os.openpty()
    try:
        r = subprocess.run([sys.executable, "-c", "from imagebuilder.cli.argspec import "
                            "stdin_notice; stdin_notice('the Ignition config')"],
                           stdin=slave, capture_output=True, text=True)
    finally:
        os.close(master)
        os.close(slave)
    assert r.stderr == "reading the Ignition config from stdin (end with Ctrl-D) ...\n"
    r = subprocess.run([sys.executable, "-c", "from imagebuilder.cli.argspec import "
                        "stdin_notice; stdin_notice('x')"], input="", capture_output=True,
                       text=True)
    assert r.stderr == ""


def test_run_declines_other_commands():
    assert argspec.run(["build", "x.yaml"]) is None
    assert argspec.run(["--version"]) is None
    assert argspec.run([]) is None
