"""Manifest: definition mapping, up-front validation, content-hash stage ids."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError
from imagebuilder.pipeline.definition import load_definition
from imagebuilder.pipeline.manifest import Manifest, from_definition, resolve
from imagebuilder.pipeline.stages import StageIndex

REPO = Path(__file__).resolve().parents[2]
STAGE_TYPES = [
    "org.imagebuilder.source.directory",
    "org.imagebuilder.ostree.prepare",
    "org.imagebuilder.ostree.commit",
    "org.imagebuilder.ostree.deploy",
    "org.imagebuilder.grub.config",
    "org.imagebuilder.disk.image",
]

WRITE_STAGE = """#!/usr/bin/env python3
from imagebuilder.pipeline.stageapi import stage_main
def main(args):
    (args.tree / "marker").write_text("{name}")
stage_main(main)
"""


def make_stage(d: Path, name: str, schema: dict | None = None, body: str | None = None) -> Path:
    exe = d / name
    exe.write_text(body or WRITE_STAGE.format(name=name))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (d / f"{name}.meta.json").write_text(json.dumps(
        {"summary": name, "description": "test", "schema": schema or {"type": "object"}}))
    return exe


@pytest.fixture
def any_options_index(tmp_path: Path) -> StageIndex:
    """Every stage of the definition mapping, accepting any options."""
    d = tmp_path / "stages"
    d.mkdir()
    for t in STAGE_TYPES:
        make_stage(d, t)
    return StageIndex(d)


@pytest.fixture
def definition(tmp_path: Path):
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "os-release").write_text("ID=tiny\n")

    def _load(extra: str = ""):
        p = tmp_path / "image.yaml"
        p.write_text("name: tiny\nseed: s\nsource: {type: directory, path: rootfs}\n"
                     "ostree: {osname: tiny, ref: tiny/x86_64/dev, version: '1'}\n" + extra)
        return load_definition(p)

    return _load


def ids(resolved) -> dict[tuple[str, int], str]:
    return {k: v.id for k, v in resolved.stages.items()}


def test_definition_maps_to_four_pipelines(definition, any_options_index):
    m = from_definition(definition("kernel_args: [quiet]\n"), any_options_index)
    assert [p.name for p in m.pipelines] == ["tree", "commit", "sysroot", "image"]
    assert [s.type for p in m.pipelines for s in p.stages] == STAGE_TYPES
    deploy = m.pipeline("sysroot").stages[0]
    assert deploy.inputs == {"repo": "commit"}
    assert deploy.options["kernel_args"] == ["ignition.platform.id=metal", "quiet"]
    assert deploy.options["console"] == ["tty0", "ttyS0,115200n8"]
    assert m.pipeline("commit").stages[0].inputs == {"tree": "tree"}
    assert m.pipeline("image").stages[0].options["seed"] == "s"
    assert m.artifacts[0].name == "tiny.x86_64.raw" and m.artifacts[0].path == "disk.raw"
    src = m.pipeline("tree").stages[0].options
    assert src["path"].endswith("/rootfs") and len(src["fingerprint"]) == 64


def test_repo_stage_schemas_accept_the_mapping(definition):
    """The options we produce validate against the stage owners' real schemas."""
    index = StageIndex(REPO / "osbuild-stages")
    missing = [t for t in STAGE_TYPES if t not in index.names()]
    if missing:
        pytest.skip(f"stages not written yet: {missing}")
    d = definition("kernel_args: [quiet]\nignition: {platform: qemu}\ndisk: {size: 3G, root_fs: xfs}\n")
    resolved = resolve(from_definition(d, index), index)
    # + org.imagebuilder.ignition.integration: an ignition: section brings the OS integration
    assert len(resolved.stages) == len(STAGE_TYPES) + 1


def test_ids_are_stable_and_roundtrip(definition, any_options_index):
    m = from_definition(definition(), any_options_index)
    r1 = resolve(m, any_options_index)
    r2 = resolve(from_definition(definition(), any_options_index), any_options_index)
    assert ids(r1) == ids(r2)
    printed = json.loads(json.dumps(m.to_json(r1)))
    assert printed["pipelines"][2]["stages"][0]["id"] == r1.stage("sysroot", 0).id
    r3 = resolve(Manifest.from_json(printed), any_options_index)  # ids in the input are ignored
    assert ids(r3) == ids(r1)
    assert len(set(ids(r1).values())) == len(STAGE_TYPES)


def test_kernel_arg_change_changes_only_downstream_ids(definition, any_options_index):
    a = ids(resolve(from_definition(definition("kernel_args: [quiet]\n"), any_options_index),
                    any_options_index))
    b = ids(resolve(from_definition(definition("kernel_args: [debug]\n"), any_options_index),
                    any_options_index))
    same = {k for k in a if a[k] == b[k]}
    assert same == {("tree", 0), ("tree", 1), ("commit", 0)}


def test_source_epoch_and_source_content_change_ids(definition, any_options_index, tmp_path):
    base = ids(resolve(from_definition(definition(), any_options_index), any_options_index))
    epoch = ids(resolve(from_definition(definition("source_epoch: 5\n"), any_options_index),
                        any_options_index))
    assert all(base[k] != epoch[k] for k in base)
    (tmp_path / "rootfs" / "etc" / "hostname").write_text("x\n")
    changed = ids(resolve(from_definition(definition(), any_options_index), any_options_index))
    assert all(base[k] != changed[k] for k in base)


def test_editing_a_stage_executable_changes_its_id(definition, any_options_index):
    before = ids(resolve(from_definition(definition(), any_options_index), any_options_index))
    exe = any_options_index.directory / "org.imagebuilder.ostree.commit"
    exe.write_text(exe.read_text() + "# edited\n")
    index = StageIndex(any_options_index.directory)
    after = ids(resolve(from_definition(definition(), index), index))
    assert before[("tree", 1)] == after[("tree", 1)]
    assert before[("commit", 0)] != after[("commit", 0)]
    assert before[("image", 0)] != after[("image", 0)]


def test_schema_errors_name_pipeline_stage_and_option_path(tmp_path):
    d = tmp_path / "stages"
    d.mkdir()
    make_stage(d, "org.imagebuilder.test.a", {
        "type": "object", "additionalProperties": False,
        "properties": {"size": {"type": "integer"},
                       "files": {"type": "array", "items": {"type": "string"}}}})
    index = StageIndex(d)
    m = Manifest.from_json({"version": "1", "name": "t", "pipelines": [
        {"name": "one", "stages": [{"type": "org.imagebuilder.test.a", "options": {"size": "big"}}]},
        {"name": "two", "stages": [
            {"type": "org.imagebuilder.test.a", "options": {"files": ["ok", 3]}},
            {"type": "org.imagebuilder.test.a", "options": {"colour": "red"}},
            {"type": "org.imagebuilder.test.b"},
            {"type": "org.imagebuilder.test.a", "inputs": {"x": {"pipeline": "three"}}},
        ]},
    ]})
    with pytest.raises(InvalidConfigError) as e:
        resolve(m, index)
    msg = e.value.message
    assert "5 error(s)" in msg
    assert "pipeline 'one', stage 0 (org.imagebuilder.test.a): options/size: 'big' is not of type 'integer'" in msg
    assert "pipeline 'two', stage 0 (org.imagebuilder.test.a): options/files/1: 3 is not of type 'string'" in msg
    assert "pipeline 'two', stage 1 (org.imagebuilder.test.a): options: Additional properties" in msg
    assert "pipeline 'two', stage 2 (org.imagebuilder.test.b): unknown stage" in msg
    assert "did you mean 'org.imagebuilder.test.a'?" in msg
    assert "input 'x' refers to unknown pipeline 'three'" in msg


def test_manifest_shape_is_validated():
    with pytest.raises(InvalidConfigError, match="invalid manifest"):
        Manifest.from_json({"version": "1", "name": "x", "pipelines": [{"name": "p"}]})
    with pytest.raises(InvalidConfigError, match="invalid manifest"):
        Manifest.from_json({"version": "2", "name": "x", "pipelines": []})


def test_inputs_must_refer_to_earlier_pipelines(tmp_path):
    d = tmp_path / "stages"
    d.mkdir()
    make_stage(d, "org.imagebuilder.test.a")
    m = Manifest.from_json({"version": "1", "name": "t", "pipelines": [
        {"name": "one", "stages": [{"type": "org.imagebuilder.test.a", "inputs": {"x": {"pipeline": "two"}}}]},
        {"name": "two", "stages": [{"type": "org.imagebuilder.test.a"}]},
    ]})
    with pytest.raises(InvalidConfigError, match="not defined before this pipeline"):
        resolve(m, StageIndex(d))


def test_ignition_config_needs_the_integration_stage(definition, any_options_index, tmp_path):
    (tmp_path / "c.ign").write_text('{"ignition": {"version": "3.4.0"}}')
    with pytest.raises(InvalidConfigError, match="not yet supported"):
        from_definition(definition("ignition: {config: c.ign}\n"), any_options_index)
    make_stage(any_options_index.directory, "org.imagebuilder.ignition.integration")
    index = StageIndex(any_options_index.directory)
    m = from_definition(definition("ignition: {config: c.ign, platform: qemu}\n"), index)
    assert [s.type for s in m.pipeline("tree").stages][1] == "org.imagebuilder.ignition.integration"


def test_cli_manifest_and_stages(cli, tmp_path):
    (tmp_path / "rootfs").mkdir()
    img = tmp_path / "image.yaml"
    img.write_text("name: tiny\nsource: {type: directory, path: rootfs}\n"
                   "ostree: {osname: tiny, ref: tiny/x86_64/dev}\nkernel_args: [quiet]\n")
    env = {"IMAGEBUILDER_STAGES_DIR": ""}
    r = cli("stages", "--json", env=env)
    assert r.returncode == 0, r.stderr
    names = [s["name"] for s in json.loads(r.stdout)["stages"]]
    assert {"org.imagebuilder.source.tarball", "org.imagebuilder.source.oci"} <= set(names)
    r = cli("manifest", str(img), env=env)
    if r.returncode == 3 and b"unknown stage" in r.stderr:
        pytest.skip("not every stage of the mapping is written yet")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert [p["name"] for p in m["pipelines"]] == ["tree", "commit", "sysroot", "image"]
    assert all(len(s["id"]) == 64 for p in m["pipelines"] for s in p["stages"])
    assert m["pipelines"][-1]["id"] == m["pipelines"][-1]["stages"][-1]["id"]
    img.write_text(img.read_text() + "disk: {sizee: 4G}\n")
    r = cli("manifest", str(img), env=env)
    assert r.returncode == 3
    assert b"disk.sizee: unknown key" in r.stderr and b"did you mean 'size'?" in r.stderr
