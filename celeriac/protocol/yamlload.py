"""YAML as the yaml serializer reads it: PyYAML's safe loader, with nesting bounded.

PyYAML composes nodes recursively, so a deeply nested document would end in a
RecursionError; this loader counts the levels instead. An alias counts as deep as the node
it names, placed where the alias is: that keeps a chain of anchors from building a value
deeper than the limit, and refuses a node that contains an alias to itself (a value that
would contain itself). Kept out of :mod:`celeriac.protocol.serializers`, which wheels
compile with mypyc: a compiled module cannot subclass PyYAML's loader.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from celeriac.exceptions import DecodeError


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, data: bytes, max_depth: int) -> None:
        super().__init__(data)
        self._max_depth = max_depth
        self._depth = 0  # containers open around the node being composed
        #: Nesting height of every node composed so far (a scalar is 0), by ``id``: nodes
        #: live as long as the loader, so their ids stay theirs.
        self._heights: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            height = self._heights.get(id(node))
            if height is None:  # the alias is inside the node it names
                raise DecodeError("YAML alias to a node that contains it")
            self._check(self._depth + height)
            return node
        container = not self.check_event(yaml.ScalarEvent)
        if container:
            self._depth += 1
            self._check(self._depth)
        try:
            node = super().compose_node(parent, index)
        finally:
            if container:
                self._depth -= 1
        self._heights[id(node)] = self._height(node)
        return node

    def _height(self, node: Node | None) -> int:
        heights = self._heights
        if isinstance(node, SequenceNode):
            return 1 + max((heights[id(child)] for child in node.value), default=0)
        if isinstance(node, MappingNode):
            return 1 + max(
                (max(heights[id(key)], heights[id(value)]) for key, value in node.value),
                default=0,
            )
        return 0

    def _check(self, depth: int) -> None:
        if depth > self._max_depth:
            raise DecodeError(f"YAML nested deeper than max_depth={self._max_depth}")


def load(data: bytes, max_depth: int) -> Any:
    """The single YAML document in ``data``, as ``yaml.safe_load`` reads it.

    Raises :class:`~celeriac.exceptions.DecodeError` for anything that is not such a
    document (PyYAML's errors, and the errors of its constructors, such as a bad date) and
    for lists and maps nested deeper than ``max_depth``.
    """
    try:
        loader = _BoundedLoader(data, max_depth)
    except Exception as exc:  # PyYAML reads the first bytes (encoding) on creation
        raise DecodeError(f"not valid YAML: {exc}") from exc
    try:
        return loader.get_single_data()
    except DecodeError:
        raise
    except Exception as exc:  # YAMLError, or ValueError and such from a constructor
        raise DecodeError(f"not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
