"""Butane translation: the corpus in fixtures/butane (every version and sugar kind, with the
expected Ignition output), one negative case per error class, the YAML layer, the
``imagebuilder butane translate`` command and Butane input to the ``ignition`` verbs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import yaml

from imagebuilder.butane import sugar
from imagebuilder.butane.schema import resolve_target
from imagebuilder.butane.translate import translate
from imagebuilder.butane.yamlnode import YAMLError, parse_yaml
from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition import decode
from imagebuilder.ignition.load import is_butane, load_user_config
from imagebuilder.ignition.validate import validate_config

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "butane"
FILES = CORPUS / "files"
CASES = sorted(p.stem for p in CORPUS.glob("*.bu"))
ERRORS = sorted(p.stem for p in (CORPUS / "errors").glob("*.bu"))


def header(path: Path, key: str) -> list[str]:
    return [ln.split(":", 1)[1].strip() for ln in path.read_text().splitlines() if ln.startswith(f"# {key}:")]


def run(path: Path, **kw):
    args = " ".join(header(path, "args")).split()
    return translate(path.read_bytes(), source=path.name, files_dir=FILES, raw="--raw" in args,
                     experimental="--experimental" in args, **kw), args


def normalise(value):
    """Decode gzip data URLs (the deflate bytes of Go and zlib differ), keep everything else."""
    if isinstance(value, dict):
        out = {k: normalise(v) for k, v in value.items()}
        if value.get("compression") == "gzip" and str(value.get("source", "")).startswith("data:"):
            try:
                out["source"] = ("gunzipped", decode.decode_contents(value).decode("utf-8", "replace"))
            except InvalidConfigError:  # declared gzip by the config, but not (compared as is)
                pass
        return out
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def expected_output(name: str):
    ign, mc = CORPUS / f"{name}.ign", CORPUS / f"{name}.yaml"
    if ign.exists():
        return "ign", json.loads(ign.read_text())
    return "yaml", yaml.safe_load(mc.read_text())


# --------------------------------------------------------------------------- the corpus


def test_corpus_covers_every_version_and_sugar_kind():
    assert len(CASES) >= 30
    texts = {c: (CORPUS / f"{c}.bu").read_text() for c in CASES}
    everything = "\n".join(texts.values())
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0", "1.8.0-experimental"):
        assert f"version: {v}" in everything, v
    for v in ("4.8.0", "4.14.0", "4.20.0"):
        assert f"variant: openshift\nversion: {v}" in everything, v
    for sugar_kind in ("inline:", "local:", "trees:", "contents_local:", "ssh_authorized_keys_local:",
                       "kernel_arguments:", "tpm2: true", "tang:", "threshold:", "discard:", "cex:",
                       "mirror:", "grub:", "with_mount_unit: true", "format: swap", "layout: aarch64",
                       "layout: ppc64le", "layout: s390x-eckd", "file_mode:", "quadlets:"):
        assert sugar_kind in everything, sugar_kind
    for c, text in texts.items():
        assert "# mirrors: " in text, f"{c}: say which Butane example or test it mirrors"
        assert (CORPUS / f"{c}.ign").exists() or (CORPUS / f"{c}.yaml").exists(), c


@pytest.mark.parametrize("name", CASES)
def test_corpus_translates_to_the_expected_output(name):
    path = CORPUS / f"{name}.bu"
    result, args = run(path, pretty=True)
    assert [p.format() for p in result.problems] == header(path, "expect-warning")
    assert result.output is not None and result.ignition is not None
    kind, expected = expected_output(name)
    if kind == "ign":
        got = json.loads(result.output)
        assert normalise(got) == normalise(expected)
    else:
        got = yaml.safe_load(result.output)
        assert got["apiVersion"] == "machineconfiguration.openshift.io/v1" and got["kind"] == "MachineConfig"
        assert normalise(got) == normalise(expected)
        assert got["spec"]["config"] == result.ignition
    # the output is a valid config for our own validator (3.7.0-experimental: by 3.6.0's rules)
    ign = dict(result.ignition, ignition={**result.ignition["ignition"], "version": "3.6.0"}) \
        if "--experimental" in args else result.ignition
    report = validate_config(json.dumps(ign).encode())
    assert report.valid, [p.format() for p in report.problems]
    assert not [p for p in report.warnings if p.kind == "unused-key"]


def test_boot_device_luks_is_the_exact_storage_layout_butane_emits():
    """The reference output of `boot_device: {luks: {tpm2: true}}` (Butane 0.2x, fcos 1.6.0),
    compared byte for byte after JSON normalisation."""
    reference = json.loads("""{"ignition": {"version": "3.5.0"}, "storage": {
      "luks": [{"clevis": {"tpm2": true}, "device": "/dev/disk/by-partlabel/root",
                "label": "luks-root", "name": "root", "wipeVolume": true}],
      "filesystems": [{"device": "/dev/mapper/root", "format": "xfs",
                       "label": "root", "wipeFilesystem": true}]}}""")
    result = translate(b"variant: fcos\nversion: 1.6.0\nboot_device:\n  luks:\n    tpm2: true\n")
    assert json.dumps(json.loads(result.output), sort_keys=True) == json.dumps(reference, sort_keys=True)
    # and Butane's exact bytes: compact, keys in Ignition's Go struct order
    assert result.output == (b'{"ignition":{"version":"3.5.0"},"storage":{"filesystems":[{"device":"/dev/mapper/root",'
                             b'"format":"xfs","label":"root","wipeFilesystem":true}],"luks":[{"clevis":{"tpm2":true},'
                             b'"device":"/dev/disk/by-partlabel/root","label":"luks-root","name":"root",'
                             b'"wipeVolume":true}]}}\n')


@pytest.mark.parametrize("name", ERRORS)
def test_error_classes(name):
    path = CORPUS / "errors" / f"{name}.bu"
    expected = header(path, "expect")
    assert expected, f"{name}: list the expected problems in '# expect:' lines"
    result, args = run(path)
    assert [p.format() for p in result.problems] == expected
    assert not result.passes(strict="--strict" in args)
    if "--strict" in args:
        assert result.passes() and not result.errors  # only the warnings make it fail


# --------------------------------------------------------------------------- pieces


def test_versions_map_to_ignition_specs():
    table = {"1.0.0": "3.0.0", "1.1.0": "3.1.0", "1.2.0": "3.2.0", "1.3.0": "3.2.0", "1.4.0": "3.3.0",
             "1.5.0": "3.4.0", "1.6.0": "3.5.0", "1.7.0": "3.6.0"}
    for fcos, ign in table.items():
        assert resolve_target("fcos", fcos).ignition == ign
    for minor in range(8, 23):
        want = "3.2.0" if minor <= 13 else "3.4.0" if minor <= 18 else "3.5.0"
        assert resolve_target("openshift", f"4.{minor}.0").ignition == want
    assert resolve_target("fcos", "1.8.0-experimental", experimental=True).ignition == "3.7.0-experimental"


def test_yaml_positions_merge_keys_and_limits():
    root = parse_yaml(b"a: &x\n  k: 1\nb:\n  <<: *x\n  j: [1, 'two']\n")
    assert (root.get("b").get("j").items[1].line, root.get("b").get("j").items[1].column) == (5, 10)
    assert root.get("b").get("k").value == "1"  # merged from the anchor
    assert not root.get("b").get("j").items[1].plain
    with pytest.raises(YAMLError, match='mapping key "a" already defined at line 1') as e:
        parse_yaml(b"a: 1\nb: 2\na: 3\n")
    assert (e.value.line, e.value.column) == (3, 1)
    with pytest.raises(YAMLError, match="nesting depth"):
        parse_yaml(b"x: " + b"[" * 100 + b"]" * 100)
    assert parse_yaml(b"") is None and parse_yaml(b"# only a comment\n") is None


def test_data_urls_like_butane():
    assert sugar.make_data_url(b"Hello, world!", None) == ("data:,Hello%2C%20world!", "")
    url, comp = sugar.make_data_url(b"z" * 150, None)
    assert comp == "gzip" and gzip.decompress(decode.decode_data_url(url)) == b"z" * 150
    assert sugar.make_data_url(b"z" * 150, None, allow_compression=False)[1] == ""
    assert sugar.make_data_url(b"z" * 150, "gzip") == ("data:," + "z" * 150, None)  # already compressed
    assert sugar.make_data_url(bytes(range(20)), None)[0].startswith("data:;base64,")
    assert sugar.gzip_best(b"x")[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def test_unit_name_escaping():
    assert sugar.unit_path_escape("/var/lib/containers") == "var-lib-containers"
    assert sugar.unit_path_escape("/dev/disk/by-label/foo") == "dev-disk-by\\x2dlabel-foo"
    assert sugar.unit_path_escape("/srv/.hidden dir") == "srv-.hidden\\x20dir"
    assert sugar.unit_path_escape("/.x") == "\\x2ex"
    assert sugar.unit_path_escape("/") == "-"


def test_files_dir_is_required_for_local_references():
    data = b"variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /a\n      contents:\n        local: x\n"
    result = translate(data)  # no files dir
    assert [p.format() for p in result.errors] == [
        "error at $.storage.files.0.contents.local, line 7 col 16: local file paths are relative to a "
        "files directory that must be specified with -d/--files-dir"]


def test_local_reads_only_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    data = b"variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /a\n      contents:\n        local: fifo\n"
    result = translate(data, files_dir=tmp_path)  # must not block reading the FIFO
    assert "not a regular file" in result.errors[0].message


def test_tree_special_files_are_refused(tmp_path):
    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "fifo")
    data = b"variant: fcos\nversion: 1.5.0\nstorage:\n  trees:\n    - local: t\n"
    result = translate(data, files_dir=tmp_path)
    assert [p.message for p in result.errors] == ["trees may only contain files, directories, and symlinks"]


# --------------------------------------------------------------------------- the command


def test_cli_translate(cli, tmp_path):
    src = CORPUS / "40-fcos-1.7-everything.bu"
    out = tmp_path / "out.ign"
    r = cli("butane", "translate", str(src), "-o", str(out), "--files-dir", str(FILES))
    assert r.returncode == 0, r.stderr
    assert normalise(json.loads(out.read_text())) == normalise(json.loads((CORPUS / f"{src.stem}.ign").read_text()))
    r = cli("butane", "translate", str(src), "-o", str(out), "-d", str(FILES))
    assert r.returncode == 2 and b"file exists" in r.stderr  # no clobbering without -f
    assert cli("butane", "translate", str(src), "-o", str(out), "-d", str(FILES), "-f").returncode == 0
    # stdout, pretty; the files directory defaults to the config's own directory
    local = tmp_path / "with-local.bu"
    (tmp_path / "motd").write_text("hello\n")
    local.write_text("variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/motd\n"
                     "      contents:\n        local: motd\n")
    r = cli("butane", "translate", "--pretty", str(local))
    assert r.returncode == 0 and r.stdout.startswith(b'{\n  "ignition": {\n    "version": "3.5.0"')
    # from stdin there is no default files directory
    r = cli("butane", "translate", "-", input=local.read_bytes())
    assert r.returncode == 3 and b"--files-dir" in r.stderr


def test_cli_errors_and_strict(cli, tmp_path):
    bad = CORPUS / "errors" / "inline-and-local.bu"
    r = cli("butane", "translate", str(bad), "-d", str(FILES))
    assert r.returncode == 3
    assert b"error at $.storage.files.0.contents.inline, line " in r.stderr
    assert b"translation failed: 1 error" in r.stderr and b"Traceback" not in r.stderr
    warn = CORPUS / "errors" / "unused-key.bu"
    r = cli("butane", "translate", str(warn))
    assert r.returncode == 0 and b"warning at $.storage.file, line " in r.stderr
    r = cli("butane", "translate", "--strict", str(warn))
    assert r.returncode == 3 and b"--strict" in r.stderr
    raw = CORPUS / "36-openshift-4.20-machineconfig.bu"
    r = cli("butane", "translate", "--raw", str(raw))
    assert r.returncode == 0 and json.loads(r.stdout)["ignition"]["version"] == "3.5.0"
    assert b"field ignored in raw mode" in r.stderr
    r = cli("butane", "translate", str(raw))
    assert r.stdout.startswith(b"# Generated") and yaml.safe_load(r.stdout)["spec"]["kernelType"] == "realtime"


# --------------------------------------------------------------------------- Butane wherever a config is accepted


def test_is_butane():
    assert is_butane(b"{}", "x.bu")
    assert is_butane(b"# comment\n---\nvariant: fcos\nversion: 1.5.0\n")
    assert is_butane(b"\xef\xbb\xbfvariant: fcos\n")
    assert not is_butane(b'{"ignition": {"version": "3.3.0"}}', "x.ign")
    assert not is_butane(b"version: 1.5.0\nvariant: fcos\n")  # only a config that starts with variant:


def test_load_user_config(tmp_path):
    ign = b'{"ignition":{"version":"3.3.0"}}'
    assert load_user_config(ign) == ign  # Ignition is returned as is
    (tmp_path / "k.pub").write_text("ssh-ed25519 AAAA key@x\n")
    bu = tmp_path / "c.bu"
    bu.write_text("variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: core\n"
                  "      ssh_authorized_keys_local: [k.pub]\nextra: 1\n")
    warnings: list[str] = []
    out = json.loads(load_user_config(bu, on_warning=warnings.append))
    assert out["passwd"]["users"][0]["sshAuthorizedKeys"] == ["ssh-ed25519 AAAA key@x"]
    assert warnings == [f"{bu}: warning at $.extra, line 7 col 1: unused key extra"]
    bu.write_text("variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: rel\n")
    with pytest.raises(InvalidConfigError, match=r"c\.bu: Butane config: error at \$\.storage\.files\.0\.path, "
                                                 r"line 5 col 13: path not absolute"):
        load_user_config(bu)
    with pytest.raises(InvalidConfigError, match="larger than the 32 MiB limit"):
        load_user_config(b" " * (32 * 1024 * 1024 + 1))


def test_ignition_verbs_accept_butane(cli, tmp_path):
    bu = tmp_path / "node.bu"
    bu.write_text("variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/motd\n"
                  "      contents:\n        inline: hello from butane\n")
    r = cli("ignition", "validate", str(bu))
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("ignition", "show", str(bu))
    assert r.returncode == 0 and b"hello from butane" in r.stdout and b"spec 3.5.0" in r.stdout
    base = tmp_path / "base.ign"
    base.write_text('{"ignition":{"version":"3.3.0"}}')
    r = cli("ignition", "merge", str(base), str(bu))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["storage"]["files"][0]["path"] == "/etc/motd"
    bad = tmp_path / "bad.bu"
    bad.write_text("variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: rel\n")
    r = cli("ignition", "validate", str(bad))
    assert r.returncode == 1 and b"error at $.storage.files.0.path, line 5 col 13: path not absolute" in r.stdout
    assert cli("ignition", "show", str(bad)).returncode == 3
    assert cli("ignition", "merge", str(base), str(bad)).returncode == 3


def test_boot_test_config_translates_cleanly_for_debian_ignition():
    """fixtures/butane/boot/firstboot.bu (the boot test's config) targets Ignition 2.14: spec 3.3.0."""
    bu = CORPUS / "boot" / "firstboot.bu"
    result = translate(bu.read_bytes(), source=bu.name, files_dir=CORPUS / "boot" / "files")
    assert result.problems == [] and result.config["ignition"]["version"] == "3.3.0"
    units = {u["name"] for u in result.config["systemd"]["units"]}
    assert {"var-data.mount", "imagebuilder-butane-check.service"} <= units
    assert {ln["path"]: ln["target"] for ln in result.config["storage"]["links"]} == {
        "/etc/butane-tree/tool-link": "bin/tree-tool"}


@pytest.mark.parametrize("name", ["dest", "dest-2", "live", "live-2"])
def test_byte_identical_to_butane_on_coreos_installer_fixtures(shared_fixtures, name):
    """coreos-installer's test fixtures hold Butane configs next to the `butane --pretty`
    output made from them: ours is the same, byte for byte."""
    fx = shared_fixtures / "customize"
    result = translate((fx / f"{name}.bu").read_bytes(), pretty=True)
    assert result.problems == []
    assert result.output == (fx / f"{name}.ign").read_bytes()
