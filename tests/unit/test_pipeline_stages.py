"""Stage discovery (env override, checkout, installed data dir) and schema validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagebuilder.errors import InvalidConfigError, UserInputError
from imagebuilder.pipeline import stages as stages_mod
from imagebuilder.pipeline.stages import StageIndex, stages_dir
from imagebuilder.sources.mmdebstrap import MmdebstrapOptions, argv

REPO = Path(__file__).resolve().parents[2]


def test_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEBUILDER_STAGES_DIR", str(tmp_path))
    assert stages_dir() == tmp_path
    monkeypatch.setenv("IMAGEBUILDER_STAGES_DIR", str(tmp_path / "nope"))
    with pytest.raises(UserInputError, match="not a directory"):
        stages_dir()


def test_checkout_dir_is_found(monkeypatch):
    monkeypatch.delenv("IMAGEBUILDER_STAGES_DIR", raising=False)
    assert stages_dir() == REPO / "osbuild-stages"


def test_installed_data_dir_is_found(tmp_path, monkeypatch):
    """An installed package (no checkout beside it) finds PREFIX/share/imagebuilder/osbuild-stages."""
    monkeypatch.delenv("IMAGEBUILDER_STAGES_DIR", raising=False)
    share = tmp_path / "share" / "imagebuilder" / "osbuild-stages"
    share.mkdir(parents=True)
    (share / "org.imagebuilder.x").write_text("#!/usr/bin/env python3\n")
    (share / "org.imagebuilder.x.meta.json").write_text('{"summary": "x", "schema": {}}')
    fake_pkg = tmp_path / "site" / "imagebuilder" / "pipeline" / "stages.py"
    monkeypatch.setattr(stages_mod, "__file__", str(fake_pkg))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert stages_dir() == share


def test_index_lists_and_validates():
    index = StageIndex(REPO / "osbuild-stages")
    names = index.names()
    assert {"org.imagebuilder.source.directory", "org.imagebuilder.source.tarball",
            "org.imagebuilder.source.oci", "org.imagebuilder.source.mmdebstrap"} <= set(names)
    mm = index.get("org.imagebuilder.source.mmdebstrap")
    assert mm.validate({"suite": "bookworm", "variant": "minbase", "packages": ["busybox"]}) == []
    errors = dict(mm.validate({"suite": "bookworm", "variant": "huge", "packages": ["Bad Name"]}))
    assert set(errors) == {"variant", "packages/0"}
    assert mm.validate({})[0] == ("(options)", "'suite' is a required property")
    for info in index.all():  # every meta.json schema is itself a valid JSON schema
        import jsonschema

        jsonschema.validators.validator_for(info.schema).check_schema(info.schema)
        assert info.summary


def test_bad_stage_names(tmp_path):
    index = StageIndex(tmp_path)
    with pytest.raises(InvalidConfigError, match="invalid stage type"):
        index.get("../../bin/sh")
    (tmp_path / "org.imagebuilder.broken").write_text("")
    (tmp_path / "org.imagebuilder.broken.meta.json").write_text("{not json")
    with pytest.raises(InvalidConfigError, match="cannot read stage metadata"):
        index.get("org.imagebuilder.broken")


def test_mmdebstrap_argv():
    opts = MmdebstrapOptions(suite="bookworm", variant="minbase", packages=("busybox", "kmod"))
    assert argv(opts, Path("/t")) == ["mmdebstrap", "--mode=root", "--variant=minbase",
                                      "--components=main", "--include=busybox,kmod", "bookworm", "/t"]
    m = MmdebstrapOptions(suite="bookworm", mirror="http://mirror.example/debian", components=("main", "contrib"))
    assert argv(m, Path("/t"))[-3:] == ["bookworm", "/t", "http://mirror.example/debian"]
    assert "--components=main,contrib" in argv(m, Path("/t"))
