"""Boot Loader Specification (type 1) entries, as ``ostree admin deploy`` writes them.

An entry is a text file of ``key value`` lines in ``<boot>/loader/entries/*.conf``::

    title Debian GNU/Linux 12 (bookworm) 1.0 (ostree:0)
    version 1
    options root=LABEL=root rw $ignition_firstboot ostree=/ostree/boot.1/debian/<bootcsum>/0
    linux /ostree/debian-<bootcsum>/vmlinuz-6.1.0-50-amd64
    initrd /ostree/debian-<bootcsum>/initramfs-6.1.0-50-amd64.img

Paths (``linux``, ``initrd``) are relative to the root of the filesystem holding the
entries, i.e. the boot partition. ``ostree`` can appear several times in an entry only
for ``initrd``; we keep every value of repeated keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidConfigError

ENTRIES_DIR = "loader/entries"


@dataclass(frozen=True)
class BlsEntry:
    name: str  # file name, e.g. ostree-1-debian.conf
    title: str = ""
    version: str = ""
    options: str = ""
    linux: str = ""
    initrd: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def kargs(self) -> list[str]:
        return self.options.split()

    @property
    def ostree_target(self) -> str | None:
        """The ``ostree=`` kernel argument (``/ostree/boot.N/OS/BOOTCSUM/SERIAL``)."""
        for a in self.kargs:
            if a.startswith("ostree="):
                return a[len("ostree="):]
        return None

    def to_dict(self) -> dict:
        d: dict = {"name": self.name, "title": self.title, "version": self.version,
                   "options": self.options, "linux": self.linux, "initrd": list(self.initrd)}
        if self.extra:
            d["extra"] = dict(self.extra)
        return d


def parse_entry(text: str, name: str = "") -> BlsEntry:
    fields: dict[str, str] = {}
    initrd: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "initrd":
            initrd.append(value)
        else:
            fields[key] = value
    if "linux" not in fields:
        raise InvalidConfigError(f"BLS entry {name or '?'} has no 'linux' line")
    known = {"title", "version", "options", "linux"}
    return BlsEntry(name=name, title=fields.get("title", ""), version=fields.get("version", ""),
                    options=fields.get("options", ""), linux=fields["linux"], initrd=tuple(initrd),
                    extra={k: v for k, v in fields.items() if k not in known})


def format_entry(entry: BlsEntry) -> str:
    lines = []
    for key in ("title", "version", "options", "linux"):
        value = getattr(entry, key)
        if value:
            lines.append(f"{key} {value}")
    lines += [f"initrd {i}" for i in entry.initrd]
    lines += [f"{k} {v}" for k, v in sorted(entry.extra.items())]
    return "\n".join(lines) + "\n"


def _version_key(e: BlsEntry) -> tuple[int, str]:
    try:
        return (-int(e.version), e.name)
    except ValueError:
        return (0, e.name)


def read_entries(boot: Path) -> list[BlsEntry]:
    """All entries under ``boot/loader/entries``, newest (highest version) first."""
    d = boot / ENTRIES_DIR
    if not d.is_dir():
        return []
    entries = [parse_entry(p.read_text(), p.name) for p in sorted(d.glob("*.conf"))]
    return sorted(entries, key=_version_key)


def check_boot_relative(entry: BlsEntry, boot: Path) -> None:
    """The entry's kernel and initrds exist relative to ``boot`` (the boot partition)."""
    for p in (entry.linux, *entry.initrd):
        if not p.startswith("/") or p.startswith("/boot/"):
            raise InvalidConfigError(f"BLS entry {entry.name}: path {p} is not relative to the boot partition")
        if not (boot / p.lstrip("/")).is_file():
            raise InvalidConfigError(f"BLS entry {entry.name}: {p} not found in {boot}")
