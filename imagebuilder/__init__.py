"""imagebuilder: build and customize bootable FCOS/RHCOS-style OS images."""

__version__ = "0.1.0"
