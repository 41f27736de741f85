"""Parse systemd unit and drop-in text the way Ignition checks it (go-systemd's
deserializer): section headers must be closed and have nothing after ``]``,
every line inside a section is ``Name=value`` (with ``\\`` continuations),
``#``/``;`` lines are comments. Returns the section names found."""

from __future__ import annotations


class UnitSyntaxError(ValueError):
    pass


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Return {section: [(name, value), ...]}; raise UnitSyntaxError on malformed text."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            end = line.find("]")
            if end < 0:
                raise UnitSyntaxError("unable to find end of section")
            name = line[1:end]
            garbage = line[end + 1:].strip()
            if garbage:
                raise UnitSyntaxError(f"found garbage after section name {name}: {garbage!r}")
            current = name
            sections.setdefault(name, [])
            continue
        if current is None:
            continue  # go-systemd skips text before the first section header
        if "=" not in line:
            raise UnitSyntaxError("unexpected newline encountered while parsing option name")
        key, value = line.split("=", 1)
        value = value.strip()
        while value.endswith("\\") and i < len(lines):
            value = value[:-1] + " " + lines[i].strip()
            i += 1
        sections[current].append((key.strip(), value))
    return sections
