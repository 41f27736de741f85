"""YAML to a tree of positioned nodes, bounded for hostile input.

:func:`parse_yaml` reads the first YAML document of a Butane config into
:class:`Node` objects that keep their 1-based line and column, the way Butane's
YAML library (go-yaml v3) reports them. It is built from the parser's event
stream, not by a recursive composer, so depth, size and alias expansion are
limited here with clear errors: nesting deeper than :data:`MAX_DEPTH`, more
than :data:`MAX_NODES` nodes after expanding aliases ("excessive aliasing", a
billion-laughs document), duplicate mapping keys (go-yaml refuses them too).
Merge keys (``<<: *anchor``) are applied. Scalars stay text: their meaning
depends on the field they are decoded into (see :mod:`.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

MAX_DEPTH = 64
MAX_NODES = 200_000

MAP, SEQ, SCALAR = "map", "seq", "scalar"
STR_TAG = "tag:yaml.org,2002:str"
_MERGE_KEY = "<<"


class YAMLError(ValueError):
    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(eq=False)
class Node:
    kind: str  # MAP, SEQ or SCALAR
    line: int
    column: int
    value: str = ""  # SCALAR
    tag: str | None = None  # explicit tag of a scalar, if any
    plain: bool = True  # an unquoted scalar (only those resolve to null, bool, int)
    items: list[Node] = field(default_factory=list)  # SEQ
    pairs: list[tuple[Node, Node]] = field(default_factory=list)  # MAP, merge keys applied
    size: int = 1  # nodes in this subtree, aliases expanded

    @property
    def is_null(self) -> bool:
        return self.kind == SCALAR and self.plain and self.tag is None and self.value in (
            "", "~", "null", "Null", "NULL")

    def describe(self) -> str:
        """``!!map``, ``!!seq`` or ``!!str `text```: how go-yaml names a value in its errors."""
        if self.kind != SCALAR:
            return f"!!{self.kind}"
        text = self.value if len(self.value) <= 40 else self.value[:37] + "..."
        return f"!!str `{text}`"

    def get(self, key: str) -> Node | None:
        for k, v in self.pairs:
            if k.kind == SCALAR and k.value == key:
                return v
        return None

    def key_node(self, key: str) -> Node | None:
        for k, _v in self.pairs:
            if k.kind == SCALAR and k.value == key:
                return k
        return None


def _loader():
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Builder:
    def __init__(self) -> None:
        self.anchors: dict[str, Node] = {}
        self.count = 0

    def node_count(self, n: int) -> None:
        self.count += n
        if self.count > MAX_NODES:
            raise YAMLError(f"document contains excessive aliasing (more than {MAX_NODES} nodes)")

    def build(self, events) -> Node | None:
        stack: list[tuple[Node, str | None, list]] = []  # (container, anchor, pending map items)
        root: Node | None = None
        doc_started = False

        def attach(node: Node, anchor: str | None) -> Node | None:
            nonlocal root
            if anchor:
                self.anchors[anchor] = node
            if not stack:
                root = node
                return node
            parent, _a, pending = stack[-1]
            if parent.kind == SEQ:
                parent.items.append(node)
            else:
                pending.append(node)
            return None

        for ev in events:
            mark = ev.start_mark
            line, col = mark.line + 1, mark.column + 1
            if isinstance(ev, yaml.DocumentStartEvent):
                if doc_started:
                    break  # only the first document counts, as in Butane
                doc_started = True
            elif isinstance(ev, yaml.DocumentEndEvent):
                break
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise YAMLError(f"exceeded max nesting depth ({MAX_DEPTH} levels)", line, col)
                kind = MAP if isinstance(ev, yaml.MappingStartEvent) else SEQ
                self.node_count(1)
                stack.append((Node(kind, line, col), ev.anchor, []))
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                node, anchor, pending = stack.pop()
                if node.kind == MAP:
                    node.pairs = self.pairs(pending)
                    node.size = 1 + sum(k.size + v.size for k, v in node.pairs)
                else:
                    node.size = 1 + sum(n.size for n in node.items)
                attach(node, anchor)
            elif isinstance(ev, yaml.ScalarEvent):
                self.node_count(1)
                tag = ev.tag if ev.tag not in (None, "!") else None
                plain = ev.style in (None, "") and ev.tag != "!"
                attach(Node(SCALAR, line, col, ev.value, tag, plain), ev.anchor)
            elif isinstance(ev, yaml.AliasEvent):
                target = self.anchors.get(ev.anchor)
                if target is None:
                    raise YAMLError(f"unknown anchor '{ev.anchor}' referenced", line, col)
                self.node_count(target.size)
                attach(target, None)
        return root

    def pairs(self, flat: list[Node]) -> list[tuple[Node, Node]]:
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        seen: dict[str, Node] = {}
        for k, v in zip(flat[0::2], flat[1::2]):
            if k.kind == SCALAR and k.plain and k.tag is None and k.value == _MERGE_KEY:
                sources = v.items if v.kind == SEQ else [v]
                for src in sources:
                    if src.kind != MAP:
                        raise YAMLError("map merge requires map or sequence of maps as the value",
                                        v.line, v.column)
                    self.node_count(src.size)
                    merged.extend(src.pairs)
                continue
            if k.kind == SCALAR:
                prev = seen.get(k.value)
                if prev is not None:
                    raise YAMLError(f'mapping key "{k.value}" already defined at line {prev.line}',
                                    k.line, k.column)
                seen[k.value] = k
            explicit.append((k, v))
        # explicit keys win over merged ones; among merged ones the first wins
        for k, v in merged:
            if k.kind == SCALAR and k.value not in seen:
                seen[k.value] = k
                explicit.append((k, v))
        return explicit


def parse_yaml(data: bytes) -> Node | None:
    """The first document of ``data`` as a node tree; None for an empty document.

    Raises YAMLError (with line and column when known) for malformed or hostile YAML.
    """
    try:
        return _Builder().build(yaml.parse(data, Loader=_loader()))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            msg = f"{e.context}: {e.problem}"
        raise YAMLError(msg, mark.line + 1 if mark else None, mark.column + 1 if mark else None) from None
    except yaml.YAMLError as e:  # reader errors (bad encoding, control characters)
        mark = getattr(e, "problem_mark", None) or getattr(e, "position", None)
        text = str(e).splitlines()[0] if str(e) else "invalid YAML"
        raise YAMLError(text) from None
