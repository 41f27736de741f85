"""A small JSON parser that remembers where every value came from.

``parse_json(data)`` returns a :class:`Document`: the decoded Python value plus,
for every JSON path (a tuple of object keys and list indices), the line and
column of the value and, for object members, of the key. Lines and columns are
1-based; columns count UTF-8 bytes, as ``ignition-validate`` does;
like it, an object or array is located just after its opening bracket.

Syntax errors raise :class:`JSONSyntaxError` carrying line and column. As in
Go's ``encoding/json`` (which Ignition uses), a repeated key in an object keeps
the last value. Input that would crash a naive parser is refused with a position
too: nesting deeper than :data:`MAX_DEPTH`, and strings with a lone UTF-16
surrogate escape (``"\ud800"``, not valid Unicode). Integers too long to be any
Go integer are kept as floats, so the validator reports them as out of range.
"""

from __future__ import annotations

import bisect
import json.decoder
import re
from dataclasses import dataclass
from typing import Any

JSONPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
# Far beyond any real Ignition config (about 8 levels), and well inside Python's recursion limit.
MAX_DEPTH = 128
# An integer literal longer than this cannot be an int64; it becomes a float (possibly inf)
# instead of an int, so no digit-limit ValueError is ever raised for it.
_MAX_INT_DIGITS = 40
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Position:
    line: int
    column: int


class Document:
    """A parsed JSON value plus where each value (and object key) starts in the text.

    Offsets are stored; lines and columns are computed only when asked for.
    """

    def __init__(self, text: str):
        self.text = text
        self.value: Any = None
        self._values: dict[JSONPath, int] = {}  # path -> offset of the value
        self._keys: dict[JSONPath, int] = {}  # path -> offset of the member's key
        self._line_starts: list[int] | None = None

    def position(self, offset: int) -> Position:
        """Line and column (1-based; columns in UTF-8 bytes, like ignition-validate) of an offset."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        i = bisect.bisect_right(self._line_starts, offset) - 1
        start = self._line_starts[i]
        segment = self.text[start:offset]
        width = len(segment) if segment.isascii() else len(segment.encode("utf-8", "surrogatepass"))
        return Position(i + 1, width + 1)

    def value_pos(self, path: JSONPath) -> Position | None:
        """Position of the value at path, or of its nearest existing ancestor."""
        p = tuple(path)
        while True:
            off = self._values.get(p)
            if off is not None:
                return self.position(off)
            if not p:
                return None
            p = p[:-1]

    def key_pos(self, path: JSONPath) -> Position | None:
        off = self._keys.get(tuple(path))
        return self.position(off) if off is not None else self.value_pos(path)

    def has(self, path: JSONPath) -> bool:
        return tuple(path) in self._values


class JSONSyntaxError(ValueError):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"{message} at line {line} col {column}")
        self.message = message
        self.line = line
        self.column = column


def format_path(path: JSONPath) -> str:
    """``('storage', 'files', 0, 'path')`` -> ``$.storage.files.0.path`` (ignition-validate style)."""
    return "$" + "".join(f".{p}" for p in path)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.doc = Document(text)

    def fail(self, message: str, offset: int) -> JSONSyntaxError:
        if offset >= len(self.text):
            message = "unexpected end of JSON input"
        p = self.doc.position(min(offset, len(self.text)))
        return JSONSyntaxError(message, p.line, p.column)

    def ws(self, i: int) -> int:
        return _WS.match(self.text, i).end()

    def describe(self, i: int) -> str:
        if i >= len(self.text):
            return "unexpected end of JSON input"
        return f"invalid character {self.text[i]!r}"

    def parse(self) -> Document:
        i = self.ws(0)
        if i >= len(self.text):
            raise self.fail("unexpected end of JSON input", i)
        self.doc.value, i = self.value(i, (), 0)
        i = self.ws(i)
        if i < len(self.text):
            raise self.fail(f"{self.describe(i)} after top-level value", i)
        return self.doc

    def value(self, i: int, path: JSONPath, depth: int) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise self.fail(f"exceeded max nesting depth ({MAX_DEPTH} levels)", i)
        text = self.text
        c = text[i] if i < len(text) else ""
        # like ignition-validate, objects and arrays are located just inside their bracket
        self.doc._values[path] = i + 1 if c in "{[" and c else i
        if c == "{":
            return self.object(i + 1, path, depth)
        if c == "[":
            return self.array(i + 1, path, depth)
        if c == '"':
            return self.string(i)
        for literal, val in (("true", True), ("false", False), ("null", None)):
            if text.startswith(literal, i):
                return val, i + len(literal)
        m = _NUMBER.match(text, i)
        if m and m.end() > i:
            if m.group(1) or m.group(2) or m.end() - i > _MAX_INT_DIGITS:
                return float(m.group(0)), m.end()
            return int(m.group(0)), m.end()
        raise self.fail(f"{self.describe(i)} looking for beginning of value", i)

    def string(self, i: int) -> tuple[str, int]:
        try:
            s, end = json.decoder.scanstring(self.text, i + 1, True)
        except json.JSONDecodeError as e:
            msg = e.msg
            if msg.startswith("Unterminated string"):
                raise self.fail("unexpected end of JSON input", len(self.text)) from None
            raise self.fail(msg.lower(), e.pos) from None
        # escaped surrogate pairs are already combined; what is left is a lone surrogate
        if (m := _SURROGATE.search(s)) is not None:
            raise self.fail(f"invalid string: lone UTF-16 surrogate \\u{ord(m.group(0)):04x} "
                            "is not valid Unicode", i)
        return s, end

    def object(self, i: int, path: JSONPath, depth: int) -> tuple[dict, int]:
        out: dict[str, Any] = {}
        i = self.ws(i)
        if i < len(self.text) and self.text[i] == "}":
            return out, i + 1
        while True:
            if i >= len(self.text) or self.text[i] != '"':
                raise self.fail(f"{self.describe(i)} looking for beginning of object key string", i)
            key_at = i
            key, i = self.string(i)
            i = self.ws(i)
            if i >= len(self.text) or self.text[i] != ":":
                raise self.fail(f"{self.describe(i)} after object key", i)
            i = self.ws(i + 1)
            sub = (*path, key)
            self.doc._keys[sub] = key_at
            out.pop(key, None)  # a repeated key: last one wins, and keeps its place last
            out[key], i = self.value(i, sub, depth + 1)
            i = self.ws(i)
            if i < len(self.text) and self.text[i] == ",":
                i = self.ws(i + 1)
                continue
            if i < len(self.text) and self.text[i] == "}":
                return out, i + 1
            raise self.fail(f"{self.describe(i)} after object key:value pair", i)

    def array(self, i: int, path: JSONPath, depth: int) -> tuple[list, int]:
        out: list[Any] = []
        i = self.ws(i)
        if i < len(self.text) and self.text[i] == "]":
            return out, i + 1
        while True:
            item, i = self.value(i, (*path, len(out)), depth + 1)
            out.append(item)
            i = self.ws(i)
            if i < len(self.text) and self.text[i] == ",":
                i = self.ws(i + 1)
                continue
            if i < len(self.text) and self.text[i] == "]":
                return out, i + 1
            raise self.fail(f"{self.describe(i)} after array element", i)


def parse_json(data: bytes | str) -> Document:
    """Parse JSON text, recording the position of every value and key.

    Raises JSONSyntaxError (with line and column) on malformed input.
    """
    if isinstance(data, bytes):
        text = data.decode("utf-8", errors="replace")
    else:
        text = data
    return _Parser(text).parse()
