"""The Ignition toolkit: spec model (:mod:`.spec`), position-tracking JSON parsing
(:mod:`.parse`), version handling and translation (:mod:`.translate`) and the
validator (:mod:`.validate`, with value checks in :mod:`.checks` and unit-file syntax in
:mod:`.systemd_unit`).

Import the submodules directly, e.g.
``from imagebuilder.ignition.validate import validate_config, ensure_valid``.
"""
