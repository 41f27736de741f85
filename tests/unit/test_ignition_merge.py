"""ignition merge: Ignition's merge rules on dicts, reference rendering, the corpus, the CLI."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.ignition.merge import (
    Inline,
    load_config,
    merge_bytes,
    merge_configs,
    normalize,
    render_merge,
)

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "ignition" / "merge"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())


def children_of(case: Path) -> list[Path]:
    return sorted(case.glob("child-*.ign"), key=lambda p: int(p.stem.split("-")[1]))


def cfg(version: str = "3.6.0", **sections) -> dict:
    return {"ignition": {"version": version}, **sections}


def data(text: str) -> str:
    return "data:," + text


def b64ref(config: dict, *, gz: bool = False, hash_: str | None = None) -> dict:
    raw = json.dumps(config).encode()
    payload = gzip.compress(raw, mtime=0) if gz else raw
    ref: dict = {"source": "data:;base64," + base64.b64encode(payload).decode()}
    if gz:
        ref["compression"] = "gzip"
    if hash_ == "good":
        ref["verification"] = {"hash": "sha512-" + hashlib.sha512(raw).hexdigest()}
    elif hash_ == "bad":
        ref["verification"] = {"hash": "sha512-" + "0" * 128}
    return ref


def enc(config: dict) -> bytes:
    return json.dumps(config).encode()


# --------------------------------------------------------------------------- corpus


def test_corpus_has_enough_cases():
    assert len(CASES) >= 12
    for case in CASES:
        assert (case / "base.ign").is_file() and children_of(case), case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_matches_expected(case: Path):
    result = merge_bytes((case / "base.ign").read_bytes(),
                         [(p.read_bytes(), p.name) for p in children_of(case)], base_name="base.ign")
    expected = json.loads((case / "expected.json").read_text())
    assert result.config == expected
    assert result.config["ignition"]["version"] == "3.6.0"


# --------------------------------------------------------------------------- merge rules


def test_child_scalar_wins_and_null_does_not_clear():
    parent = cfg(passwd={"users": [{"name": "core", "shell": "/bin/sh", "uid": 1000}]})
    child = cfg(passwd={"users": [{"name": "core", "shell": "/bin/bash", "uid": None}]})
    assert merge_configs(parent, child)["passwd"]["users"] == [
        {"name": "core", "uid": 1000, "shell": "/bin/bash"}]


def test_false_and_zero_from_child_win():
    parent = cfg(systemd={"units": [{"name": "a.service", "enabled": True, "mask": True}]},
                 storage={"directories": [{"path": "/d", "mode": 0o755}]})
    child = cfg(systemd={"units": [{"name": "a.service", "enabled": False}]},
                storage={"directories": [{"path": "/d", "mode": 0}]})
    out = merge_configs(parent, child)
    assert out["systemd"]["units"] == [{"name": "a.service", "enabled": False, "mask": True}]
    assert out["storage"]["directories"] == [{"path": "/d", "mode": 0}]


def test_compression_inherited_when_child_sets_only_source():
    parent = cfg(storage={"files": [{"path": "/f", "contents": {"source": "data:;base64,AA==", "compression": "gzip"}}]})
    child = cfg(storage={"files": [{"path": "/f", "contents": {"source": data("x")}}]})
    assert merge_configs(parent, child)["storage"]["files"][0]["contents"] == {
        "source": data("x"), "compression": "gzip"}
    child["storage"]["files"][0]["contents"]["compression"] = ""
    assert merge_configs(parent, child)["storage"]["files"][0]["contents"]["compression"] == ""


def test_keyed_list_keeps_parent_position_and_appends_new():
    parent = cfg(systemd={"units": [{"name": "a.service"}, {"name": "b.service", "mask": True}]})
    child = cfg(systemd={"units": [{"name": "c.service"}, {"name": "a.service", "enabled": True}]})
    names = [u["name"] for u in merge_configs(parent, child)["systemd"]["units"]]
    assert names == ["a.service", "b.service", "c.service"]


def test_dropins_merge_by_name_inside_unit():
    parent = cfg(systemd={"units": [{"name": "a.service", "dropins": [
        {"name": "1.conf", "contents": "x"}, {"name": "2.conf", "contents": "y"}]}]})
    child = cfg(systemd={"units": [{"name": "a.service", "dropins": [
        {"name": "2.conf", "contents": "z"}, {"name": "3.conf"}]}]})
    assert merge_configs(parent, child)["systemd"]["units"][0]["dropins"] == [
        {"name": "1.conf", "contents": "x"}, {"name": "2.conf", "contents": "z"}, {"name": "3.conf"}]


def test_node_path_collision_across_lists():
    parent = cfg(storage={"files": [{"path": "/a"}], "directories": [{"path": "/b"}],
                          "links": [{"path": "/c", "target": "/a"}]})
    child = cfg(storage={"directories": [{"path": "/a"}], "links": [{"path": "/b", "target": "/x"}],
                         "files": [{"path": "/c", "mode": 384}]})
    out = merge_configs(parent, child)["storage"]
    assert out == {"files": [{"path": "/c", "mode": 384}], "directories": [{"path": "/a"}],
                   "links": [{"path": "/b", "target": "/x"}]}


def test_primitive_lists_dedupe_and_append():
    parent = cfg(passwd={"users": [{"name": "u", "sshAuthorizedKeys": ["k1", "k2"], "groups": ["wheel"]}]})
    child = cfg(passwd={"users": [{"name": "u", "sshAuthorizedKeys": ["k2", "k3"], "groups": ["docker", "wheel"]}]})
    user = merge_configs(parent, child)["passwd"]["users"][0]
    assert user["sshAuthorizedKeys"] == ["k1", "k2", "k3"]
    assert user["groups"] == ["wheel", "docker"]


def test_kernel_arguments_share_one_key_space():
    parent = cfg(kernelArguments={"shouldExist": ["a", "b"], "shouldNotExist": ["c"]})
    child = cfg(kernelArguments={"shouldExist": ["c", "d"], "shouldNotExist": ["a"]})
    assert merge_configs(parent, child)["kernelArguments"] == {
        "shouldExist": ["b", "c", "d"], "shouldNotExist": ["a"]}


def test_append_lists_are_not_deduplicated():
    parent = cfg(storage={"files": [{"path": "/f", "append": [{"source": data("1")}]}],
                          "filesystems": [{"device": "/dev/a", "format": "ext4", "options": ["-F"]}],
                          "luks": [{"name": "l", "device": "/dev/b", "options": ["--x"]}],
                          "raid": [{"name": "r", "level": "raid1", "devices": ["/dev/c"], "options": ["-o"]}]})
    out = merge_configs(parent, parent)["storage"]
    assert out["files"][0]["append"] == [{"source": data("1")}] * 2
    assert out["filesystems"][0]["options"] == ["-F", "-F"]
    assert out["luks"][0]["options"] == ["--x", "--x"]
    assert out["raid"][0]["options"] == ["-o", "-o"]
    assert out["raid"][0]["devices"] == ["/dev/c"]


def test_luks_open_options_are_keyed_and_tang_by_url():
    parent = cfg(storage={"luks": [{"name": "l", "openOptions": ["--a"], "clevis": {
        "tang": [{"url": "http://t1", "thumbprint": "x"}], "tpm2": True}}]})
    child = cfg(storage={"luks": [{"name": "l", "openOptions": ["--a", "--b"], "clevis": {
        "tang": [{"url": "http://t1", "advertisement": "{}"}, {"url": "http://t2", "thumbprint": "y"}]}}]})
    luks = merge_configs(parent, child)["storage"]["luks"][0]
    assert luks["openOptions"] == ["--a", "--b"]
    assert luks["clevis"] == {"tang": [{"url": "http://t1", "thumbprint": "x", "advertisement": "{}"},
                                       {"url": "http://t2", "thumbprint": "y"}], "tpm2": True}


def test_partitions_keyed_by_number_else_label():
    parent = cfg(storage={"disks": [{"device": "/dev/vda", "partitions": [
        {"number": 1, "label": "a", "sizeMiB": 1}, {"label": "b", "sizeMiB": 2}]}]})
    child = cfg(storage={"disks": [{"device": "/dev/vda", "partitions": [
        {"number": 1, "sizeMiB": 10}, {"label": "b", "sizeMiB": 20}, {"label": "a"}]}]})
    parts = merge_configs(parent, child)["storage"]["disks"][0]["partitions"]
    assert parts == [{"label": "a", "number": 1, "sizeMiB": 10}, {"label": "b", "sizeMiB": 20},
                     {"label": "a"}]  # label "a" != key number:1, so appended


def test_http_header_without_value_removes_parent_header():
    parent = cfg(ignition={"version": "3.6.0", "config": {"merge": [{"source": "https://x/c.ign", "httpHeaders": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}})
    child = cfg(ignition={"version": "3.6.0", "config": {"merge": [{"source": "https://x/c.ign", "httpHeaders": [
        {"name": "A"}, {"name": "C", "value": "3"}]}]}})
    headers = merge_configs(parent, child)["ignition"]["config"]["merge"][0]["httpHeaders"]
    assert headers == [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]


def test_unknown_keys_and_empty_values_are_dropped():
    out = normalize({"ignition": {"version": "3.6.0", "bogus": 1}, "storage": {"files": []},
                     "passwd": {}, "extra": {"x": 1},
                     "systemd": {"units": [{"name": "a.service", "contents": None, "what": 1}]}})
    assert out == {"ignition": {"version": "3.6.0"}, "systemd": {"units": [{"name": "a.service"}]}}


def test_wrong_shape_gives_json_path_error():
    with pytest.raises(InvalidConfigError, match=r"\$child\.storage\.files: expected a list"):
        merge_configs(cfg(), cfg(storage={"files": {"path": "/x"}}))


def test_inputs_are_not_modified():
    parent = cfg(storage={"files": [{"path": "/f", "contents": {"source": data("a")}}]})
    child = cfg(storage={"files": [{"path": "/f", "mode": 384}]})
    before = json.dumps([parent, child])
    merge_configs(parent, child)
    assert json.dumps([parent, child]) == before


# --------------------------------------------------------------------------- rendering references


def test_nested_inline_reference_with_hash_and_gzip():
    leaf = cfg("3.2.0", storage={"files": [{"path": "/leaf", "contents": {"source": data("leaf")}}]})
    mid = cfg("3.3.0", storage={"files": [{"path": "/leaf", "mode": 384}]})
    mid["ignition"]["config"] = {"merge": [b64ref(leaf, gz=True, hash_="good")]}
    result = merge_bytes(enc(cfg("3.3.0")), [(enc(mid), "mid.ign")])
    # the leaf is merged into mid first, then mid's own entry wins
    assert result.config["storage"]["files"] == [
        {"path": "/leaf", "contents": {"source": data("leaf")}, "mode": 384}]
    assert "config" not in result.config["ignition"]  # resolved references are dropped
    assert result.warnings == []


def test_hash_mismatch_is_an_error():
    child = cfg("3.3.0")
    child["ignition"]["config"] = {"merge": [b64ref(cfg("3.3.0"), hash_="bad")]}
    with pytest.raises(InvalidConfigError, match="hash mismatch"):
        merge_bytes(enc(cfg("3.3.0")), [(enc(child), "child.ign")])


def test_remote_reference_is_kept_with_warning():
    base = cfg("3.3.0")
    base["ignition"]["config"] = {"merge": [{"source": "https://example.com/extra.ign"}]}
    result = merge_bytes(enc(base), [(enc(cfg("3.3.0", kernelArguments={"shouldExist": ["quiet"]})), "c.ign")])
    assert result.config["ignition"]["config"] == {"merge": [{"source": "https://example.com/extra.ign"}]}
    assert result.config["kernelArguments"] == {"shouldExist": ["quiet"]}
    assert any("https://example.com/extra.ign" in w and "not fetched" in w for w in result.warnings)


def test_base_replace_wins_over_children_like_ignition():
    replacement = cfg("3.3.0", storage={"files": [{"path": "/r", "contents": {"source": data("r")}}]})
    base = cfg("3.3.0", storage={"files": [{"path": "/base"}]})
    base["ignition"]["config"] = {"replace": b64ref(replacement)}
    result = merge_bytes(enc(base), [(enc(cfg("3.3.0", storage={"files": [{"path": "/child"}]})), "c.ign")],
                         base_name="base.ign")
    assert [f["path"] for f in result.config["storage"]["files"]] == ["/r"]
    assert any("never merges c.ign" in w for w in result.warnings)


def test_every_input_must_be_valid_on_its_own():
    bad = cfg("3.3.0", storage={"files": [{"path": "relative"}]})
    with pytest.raises(InvalidConfigError, match="child.ign"):
        merge_bytes(enc(cfg("3.3.0")), [(enc(bad), "child.ign")])


def test_merge_that_makes_an_invalid_config_fails_like_ignition():
    base = cfg("3.3.0", storage={"files": [{"path": "/f", "user": {"id": 0}}]})
    child = cfg("3.3.0", storage={"files": [{"path": "/f", "user": {"name": "core"}}]})
    with pytest.raises(InvalidConfigError, match="merging configs resulted in an invalid config"):
        merge_bytes(enc(base), [(enc(child), "c.ign")])


def test_older_versions_translate_up_and_mask_special_bits():
    base = cfg("3.0.0", storage={"files": [{"path": "/f", "mode": 0o4755}]})
    result = merge_bytes(enc(base), [(enc(cfg("3.5.0")), "c.ign")])
    assert result.config["ignition"]["version"] == "3.6.0"
    assert result.config["storage"]["files"][0]["mode"] == 0o755


def test_render_merge_on_loaded_configs_keeps_order():
    base = load_config(enc(cfg("3.3.0", storage={"files": [{"path": "/f", "contents": {"source": data("0")}}]})), "b")
    kids = [Inline(load_config(enc(cfg("3.3.0", storage={"files": [
        {"path": "/f", "contents": {"source": data(str(i))}}]})), f"c{i}"), f"c{i}") for i in (1, 2, 3)]
    out = render_merge(base, kids).config
    assert out["storage"]["files"][0]["contents"]["source"] == data("3")


# --------------------------------------------------------------------------- CLI


def test_cli_merge_stdout(cli):
    case = CORPUS / "12-three-children-order"
    p = cli("ignition", "merge", str(case / "base.ign"), *map(str, children_of(case)))
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout) == json.loads((case / "expected.json").read_text())


def test_cli_merge_output_file_no_clobber(cli, tmp_path):
    case = CORPUS / "01-file-compression-inherited"
    out = tmp_path / "merged.ign"
    args = ["ignition", "merge", str(case / "base.ign"), str(case / "child-1.ign"), "-o", str(out)]
    p = cli(*args)
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(out.read_text()) == json.loads((case / "expected.json").read_text())
    p = cli(*args)
    assert p.returncode == 2 and b"file exists" in p.stderr
    p = cli(*args, "-f")
    assert p.returncode == 0, p.stderr.decode()
    assert [x.name for x in tmp_path.iterdir()] == ["merged.ign"]  # no temp files left


def test_cli_merge_invalid_child_exit_3(cli, tmp_path):
    base = tmp_path / "base.ign"
    child = tmp_path / "child.ign"
    base.write_text(json.dumps(cfg("3.3.0")))
    child.write_text('{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "x"}]}}')
    p = cli("ignition", "merge", str(base), str(child))
    assert p.returncode == 3
    assert b"child.ign" in p.stderr and p.stdout == b""


def test_cli_merge_missing_file_exit_2(cli, tmp_path):
    p = cli("ignition", "merge", str(tmp_path / "nope.ign"), str(tmp_path / "nope2.ign"))
    assert p.returncode == 2
    assert b"not found" in p.stderr
