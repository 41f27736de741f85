"""Unit tests for the Ignition spec model, parser, translator, validator and the
``imagebuilder ignition validate`` command (run for real through the ``cli`` fixture)."""

from __future__ import annotations

import json

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import spec
from imagebuilder.ignition.parse import JSONSyntaxError, Position, format_path, parse_json
from imagebuilder.ignition.systemd_unit import UnitSyntaxError, parse_unit
from imagebuilder.ignition.translate import parse_config, translate
from imagebuilder.ignition.validate import ensure_valid, validate_config


def cfg(version: str = "3.3.0", **body) -> bytes:
    return json.dumps({"ignition": {"version": version}, **body}, indent=2).encode()


def errors(data: bytes) -> list[tuple[str, str]]:
    return [(p.json_path, p.message) for p in validate_config(data).errors]


# --------------------------------------------------------------------------- parser


def test_parser_positions_multiline():
    text = '{\n  "a": {\n    "b": [1, "x",\n      {"c": true}]\n  }\n}\n'
    doc = parse_json(text)
    assert doc.value == {"a": {"b": [1, "x", {"c": True}]}}
    assert doc.value_pos(("a", "b", 1)) == Position(3, 14)
    assert doc.key_pos(("a",)) == Position(2, 3)
    assert doc.value_pos(("a", "b", 2, "c")) == Position(4, 13)
    # objects and arrays are located just inside their opening bracket, like ignition-validate
    assert doc.value_pos(("a", "b", 2)) == Position(4, 8)
    # a missing path falls back to the closest existing ancestor
    assert not doc.has(("a", "b", 2, "missing"))
    assert doc.value_pos(("a", "b", 2, "missing")) == Position(4, 8)


@pytest.mark.parametrize("text, line, col, fragment", [
    ('{"a": 1,}', 1, 9, "looking for beginning of object key string"),
    ('{\n  "a": [1 2]\n}', 2, 11, "after array element"),
    ('{"a": tru}', 1, 7, "looking for beginning of value"),
    ('{"a": 1} x', 1, 10, "after top-level value"),
    ('{"a": "unterminated', 1, 20, "unexpected end of JSON input"),
    ('{\n"a"', 2, 4, "unexpected end of JSON input"),
])
def test_parser_syntax_errors_have_positions(text, line, col, fragment):
    with pytest.raises(JSONSyntaxError) as e:
        parse_json(text)
    assert (e.value.line, e.value.column) == (line, col)
    assert fragment in e.value.message


def test_parser_numbers_and_duplicate_keys():
    doc = parse_json('{"i": 420, "f": 1.5, "e": 1e3, "k": 1, "k": "last"}')
    assert doc.value == {"i": 420, "f": 1.5, "e": 1000.0, "k": "last"}
    assert isinstance(doc.value["i"], int) and isinstance(doc.value["e"], float)
    assert doc.value_pos(("k",)) == Position(1, 45)  # the last "k" wins


def test_format_path():
    assert format_path(("storage", "files", 0, "path")) == "$.storage.files.0.path"
    assert format_path(()) == "$"


# --------------------------------------------------------------------------- spec model


def test_spec_fields_by_version():
    assert "kernelArguments" not in spec.CONFIG.fields_for(spec.V3_2)
    assert "kernelArguments" in spec.CONFIG.fields_for(spec.V3_3)
    assert "luks" not in spec.STORAGE.fields_for(spec.V3_1)
    assert "cex" in spec.LUKS.fields_for(spec.V3_5) and "cex" not in spec.LUKS.fields_for(spec.V3_4)
    assert "compression" in spec.FILE_RESOURCE.fields_for(spec.V3_0)
    assert "compression" not in spec.RESOURCE.fields_for(spec.V3_0)
    assert "advertisement" in spec.TANG.fields_for(spec.V3_4)


def test_spec_enums_by_version():
    assert "none" not in spec.FilesystemFormat.allowed(spec.V3_2)
    assert "none" in spec.FilesystemFormat.allowed(spec.V3_3)
    assert spec.HashFunction.allowed(spec.V3_0) == ("sha512",)
    assert spec.UrlScheme.allowed(spec.V3_1) == ("http", "https", "tftp", "s3", "data")
    assert "gs" in spec.UrlScheme.allowed(spec.V3_2) and "arn" in spec.UrlScheme.allowed(spec.V3_4)
    assert spec.SpecVersion.parse("3.6.0") == spec.LATEST
    with pytest.raises(ValueError):
        spec.SpecVersion.parse("3.4.0-experimental")


# --------------------------------------------------------------------------- validator API


def test_report_api_and_positions():
    data = b'{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"rel"}]},"foo":1}'
    r = validate_config(data, source="x.ign")
    assert r.version == spec.V3_0 and r.config["foo"] == 1
    assert [p.format() for p in r.problems] == [
        "error at $.storage.files.0.path, line 1 col 61: path not absolute",
        "warning at $.foo, line 1 col 70: unused key foo",  # as ignition-validate prints it
    ]
    assert len(r.errors) == 1 and len(r.warnings) == 1 and not r.valid


def test_syntax_error_report():
    r = validate_config(b'{\n  "ignition": {"version": "3.3.0"},\n}\n')
    assert r.config is None and r.version is None
    (p,) = r.problems
    assert (p.path, p.line, p.column, p.kind) == (None, 3, 1, "syntax")
    assert p.format().startswith("error at line 3 col 1: ")


@pytest.mark.parametrize("data, message", [
    (b'{"ignition": {"version": "2.2.0"}}', "unsupported config version 2.2.0: Ignition spec 2.x"),
    (b'{"ignition": {"version": "3.7.0"}}', "unsupported config version 3.7.0"),
    (b'{"ignition": {"version": "three"}}', "invalid config version (couldn't parse)"),
    (b'{"ignition": {}}', "invalid config version (couldn't parse)"),
    (b'{"storage": {}}', "invalid config version (couldn't parse)"),
    (b"  \n", "not a config (empty)"),
    (b"[]", "config must be a JSON object"),
])
def test_bad_versions(data, message):
    (p,) = validate_config(data).problems
    assert message in p.message


def test_newer_field_in_older_version_is_an_unused_key():
    r = validate_config(cfg("3.0.0", kernelArguments={"shouldExist": ["quiet"]}))
    assert r.valid
    (w,) = r.warnings
    assert w.json_path == "$.kernelArguments"
    assert w.message == "unused key kernelArguments (needs spec 3.3.0 or newer; this config is 3.0.0)"


def test_type_errors_stop_semantic_checks():
    r = validate_config(cfg(storage={"files": [{"path": "rel", "mode": "0644"}, {"path": 5}]}))
    assert [(p.json_path, p.message) for p in r.errors] == [
        ("$.storage.files.0.mode", "expected integer, got string"),
        ("$.storage.files.1.path", "expected string, got number"),
    ]
    assert r.config is None
    assert errors(cfg(storage={"files": [{"path": "/a", "mode": 420.5}]})) == [
        ("$.storage.files.0.mode", "expected integer, got number 420.5 (not an integer)")]
    assert errors(cfg(storage={"files": [{"path": "/a", "overwrite": 1}]}))[0][1] == "expected boolean, got number"


def test_null_means_unset():
    assert validate_config(cfg(storage={"files": [{"path": "/a", "mode": None, "contents": None}]})).valid


@pytest.mark.parametrize("version, mode, warned", [("3.5.0", 0o4755, True), ("3.6.0", 0o4755, False),
                                                   ("3.5.0", 0o755, False)])
def test_special_mode_bits_by_version(version, mode, warned):
    r = validate_config(cfg(version, storage={"directories": [{"path": "/d", "mode": mode}]}))
    assert r.valid and bool(r.warnings) == warned


def test_rules_that_differ_by_version():
    luks = {"name": "r", "device": "/dev/vda", "clevis": {"custom": {"pin": "pkcs11", "config": "{}"}}}
    assert errors(cfg("3.5.0", storage={"luks": [luks]})) == [
        ("$.storage.luks.0.clevis.custom.pin", "unsupported clevis pin")]
    assert errors(cfg("3.6.0", storage={"luks": [luks]})) == []
    src = {"path": "/a", "contents": {"source": "arn:aws:s3:::bucket/key"}}
    assert errors(cfg("3.3.0", storage={"files": [src]}))[0][1] == "invalid url scheme"
    assert errors(cfg("3.4.0", storage={"files": [src]})) == []
    sha256 = {"path": "/a", "contents": {"source": "data:,", "verification": {"hash": "sha256-" + "0" * 64}}}
    assert errors(cfg("3.0.0", storage={"files": [sha256]}))[0][1] == "unrecognized hash function"
    assert errors(cfg("3.1.0", storage={"files": [sha256]})) == []


def test_collisions_across_files_directories_links():
    data = cfg(storage={"directories": [{"path": "/x"}, {"path": "/y/sub"}], "files": [{"path": "/y"}],
                        "links": [{"path": "/y", "target": "/t"}, {"path": "/x/z", "target": "/t"}]})
    # the path-under-link check comes first, duplicates after (ignition-validate's order)
    assert errors(data) == [
        ("$.storage.directories.1", "directory path includes link in config"),
        ("$.storage.links.0", "duplicate entry defined"),
    ]


def test_path_under_link_and_systemd_conflict():
    data = cfg("3.6.0", storage={"links": [{"path": "/etc/l", "target": "/x"}],
                                 "files": [{"path": "/etc/l/f"},
                                           {"path": "/etc/systemd/system/a.service"}]},
               systemd={"units": [{"name": "a.service", "contents": "[Unit]\n"}]})
    assert errors(data) == [
        ("$.storage.files.1.path", "path conflicts with systemd unit or dropin"),
        ("$.storage.files.0", "file path includes link in config"),
    ]


def test_units_warnings():
    data = cfg(systemd={"units": [
        {"name": "a.service", "enabled": True, "mask": True, "contents": "[Service]\nExecStart=/x\n"},
        {"name": "t@.service", "contents": "[Service]\nExecStart=/x %i\n"},
        {"name": "t@one.service", "enabled": True}]})
    r = validate_config(data)
    assert r.valid
    assert [w.json_path for w in r.warnings] == [
        "$.systemd.units.0.contents", "$.systemd.units.0.mask", "$.systemd.units.2.enabled"]


def test_missing_user_name_is_a_warning():
    r = validate_config(cfg(passwd={"users": [{"sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}]}))
    assert r.valid and r.warnings[0].json_path == "$.passwd.users.0.name"


def test_partition_overlap_and_filesystem_on_partitioned_disk():
    data = cfg(storage={"disks": [{"device": "/dev/vda", "partitions": [
        {"number": 1, "startMiB": 1, "sizeMiB": 100}, {"number": 2, "startMiB": 50, "sizeMiB": 10}]}],
        "filesystems": [{"device": "/dev/vda", "format": "ext4"}]})
    r = validate_config(data)
    assert [(p.json_path, p.message) for p in r.errors] == [
        ("$.storage.disks.0.partitions.1", "partitions overlap (partition 1 and 2)")]
    assert r.warnings[0].message == "filesystem overwrites partitioned device"


def test_ensure_valid():
    good = cfg(storage={"files": [{"path": "/a"}]})
    assert ensure_valid(good, "good.ign")["storage"]["files"][0]["path"] == "/a"
    bad = cfg(storage={"files": [{"path": "/a"}, {"path": "/b"}, {"path": "rel"}]})
    with pytest.raises(InvalidConfigError) as e:
        ensure_valid(bad, "bad.ign")
    assert str(e.value) == "bad.ign: storage.files[2].path: path not absolute"
    assert e.value.exit_code == 3
    with pytest.raises(InvalidConfigError, match=r"bad.ign: line 1 col 2: "):
        ensure_valid(b"{,}", "bad.ign")


# --------------------------------------------------------------------------- translation


def test_parse_config():
    version, config = parse_config(cfg("3.2.0"))
    assert version == spec.V3_2 and config["ignition"]["version"] == "3.2.0"
    with pytest.raises(InvalidConfigError) as e:
        parse_config(b'{"ignition": {"version": "2.3.0"}}')
    assert "spec 2.x configs are not supported" in str(e.value) and e.value.hint
    with pytest.raises(InvalidConfigError, match="line 1 col 14"):
        parse_config(b'{"ignition": ')
    with pytest.raises(InvalidConfigError, match="empty"):
        parse_config(b"")


def test_translate_up_to_latest_masks_special_bits_and_drops_unknown_keys():
    _, config = parse_config(cfg("3.0.0", storage={"files": [{"path": "/a", "mode": 0o4755, "junk": 1}],
                                                   "directories": [{"path": "/d", "mode": 0o1777}]},
                                 kernelArguments={"shouldExist": ["x"]}))
    out = translate(config)
    assert out["ignition"]["version"] == "3.6.0"
    assert out["storage"]["files"] == [{"path": "/a", "mode": 0o755}]
    assert out["storage"]["directories"][0]["mode"] == 0o777
    assert "kernelArguments" not in out  # not a 3.0.0 field
    assert config["storage"]["files"][0]["mode"] == 0o4755  # input untouched
    assert validate_config(json.dumps(out).encode()).valid


def test_translate_to_requested_version():
    _, config = parse_config(cfg("3.1.0", storage={"files": [{"path": "/a", "mode": 0o4755}]}))
    out = translate(config, "3.5.0")
    assert out["ignition"]["version"] == "3.5.0" and out["storage"]["files"][0]["mode"] == 0o4755
    _, new = parse_config(cfg("3.6.0"))
    with pytest.raises(InvalidConfigError, match="only goes to newer"):
        translate(new, "3.3.0")
    with pytest.raises(InvalidConfigError, match="unsupported"):
        translate(config, "4.0.0")


def test_systemd_unit_parser():
    sections = parse_unit("# c\n[Unit]\nDescription=x\n[Service]\nExecStart=/a \\\n  b\n;c\n")
    assert sections == {"Unit": [("Description", "x")], "Service": [("ExecStart", "/a  b")]}
    for bad in ("[Unit\n", "[Unit] x\n", "[Unit]\nnovalue\n"):
        with pytest.raises(UnitSyntaxError):
            parse_unit(bad)


# --------------------------------------------------------------------------- CLI (real subprocess)


@pytest.fixture
def files(tmp_path):
    def make(**named: bytes):
        out = {}
        for name, data in named.items():
            p = tmp_path / f"{name}.ign"
            p.write_bytes(data)
            out[name] = str(p)
        return out
    return make


GOOD = cfg(storage={"files": [{"path": "/etc/motd", "contents": {"source": "data:,hi"}}]})
BAD = b'{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"rel"}]}}'
WARN = b'{"ignition":{"version":"3.3.0"},"foo":1}'


def test_cli_valid_file(cli, files):
    f = files(good=GOOD)
    p = cli("ignition", "validate", f["good"])
    assert p.returncode == 0 and p.stdout == b"", p.stderr


def test_cli_errors_exit_1_with_path_line_col(cli, files):
    f = files(bad=BAD)
    p = cli("ignition", "validate", f["bad"])
    assert p.returncode == 1
    assert p.stdout.decode() == "error at $.storage.files.0.path, line 1 col 61: path not absolute\n"
    assert p.stderr.decode().startswith("error: 1 of 1 config failed validation")


def test_cli_several_files_prefixed(cli, files):
    f = files(good=GOOD, bad=BAD, warn=WARN)
    p = cli("ignition", "validate", f["good"], f["bad"], f["warn"])
    assert p.returncode == 1
    assert p.stdout.decode().splitlines() == [
        f"{f['bad']}: error at $.storage.files.0.path, line 1 col 61: path not absolute",
        f"{f['warn']}: warning at $.foo, line 1 col 33: unused key foo",
    ]


def test_cli_strict_fails_on_warnings(cli, files):
    f = files(warn=WARN)
    assert cli("ignition", "validate", f["warn"]).returncode == 0
    p = cli("ignition", "validate", "--strict", f["warn"])
    assert p.returncode == 1 and b"--strict" in p.stderr


def test_cli_json_shape(cli, files):
    f = files(good=GOOD, warn=WARN, syntax=b'{\n  "ignition": {"version": "3.3.0"}\n  "x": 1\n}')
    p = cli("ignition", "validate", "--json", "--strict", f["good"], f["warn"], f["syntax"])
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert [(r["file"], r["valid"]) for r in out] == [(f["good"], True), (f["warn"], False),
                                                      (f["syntax"], False)]
    assert out[0]["problems"] == []
    assert out[1]["problems"] == [{"severity": "warning", "path": "$.foo", "line": 1, "column": 33,
                                   "message": "unused key foo"}]
    syntax = out[2]["problems"][0]
    assert (syntax["severity"], syntax["path"], syntax["line"], syntax["column"]) == ("error", None, 3, 3)
    assert set(out[1]) >= {"file", "valid", "problems"}


def test_cli_missing_file_exit_2(cli, files):
    f = files(good=GOOD)
    p = cli("ignition", "validate", f["good"], "/nonexistent/x.ign")
    assert p.returncode == 2
    assert p.stderr.decode().strip() == "error: /nonexistent/x.ign: Ignition config not found"
    assert p.stdout == b""


def test_cli_syntax_error_is_a_verdict(cli, files):
    f = files(trunc=b'{"ignition": {"version": "3.3.0"},\n')
    p = cli("ignition", "validate", f["trunc"])
    assert p.returncode == 1
    assert p.stdout.decode() == "error at line 2 col 1: unexpected end of JSON input\n"


def test_cli_stdin_and_2x(cli):
    p = cli("ignition", "validate", "-", input=b'{"ignition": {"version": "2.2.0"}}')
    assert p.returncode == 1
    assert b"unsupported config version 2.2.0" in p.stdout


def test_columns_count_utf8_bytes_like_ignition_validate():
    data = '{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"é€","gecos":"日本"}]},' \
           '"storage":{"files":[{"path":"rel"}]}}'.encode()
    (p,) = validate_config(data).errors
    assert (p.line, p.column) == (1, 116)  # what ignition-validate 2.14 prints for this input


def test_systemd_conflict_is_a_warning_before_3_4():
    body = dict(storage={"files": [{"path": "/etc/systemd/system/a.service"}]},
                systemd={"units": [{"name": "a.service", "contents": "[Unit]\n"}]})
    old = validate_config(cfg("3.3.0", **body))
    assert old.valid and old.warnings[0].json_path == "$.storage.files.0.path"
    assert errors(cfg("3.4.0", **body)) == [("$.storage.files.0.path", "path conflicts with systemd unit or dropin")]
