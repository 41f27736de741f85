"""Existing disk images: ``customize-image`` (Ignition config, kernel arguments, platform,
first-boot stamp) and ``inspect`` (partitions, filesystems, BLS, OSTree, Ignition state)."""
