"""Disk images: GPT tables (read/write), FCOS partition layout, filesystems built from
directory trees without mounting, and the assembly of a bootable raw disk."""
