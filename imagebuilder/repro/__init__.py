"""Reproducible builds: signed checksums, verification, image diffs and SBOMs."""
