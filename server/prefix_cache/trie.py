"""A radix tree over token-id sequences: longest-shared-prefix search for long prompts.

Edges hold numpy runs of tokens, so a 30K-token prompt is a handful of nodes and a lookup is a
few vectorised comparisons, not one dict hop per token. Pure numpy: no MLX here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def as_tokens(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """Token ids as a 1-D int64 array (no copy when it already is one)."""
    return np.asarray(tokens, dtype=np.int64).reshape(-1)


def common_prefix_len(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two token arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


class _Node:
    __slots__ = ("label", "children", "parent", "value", "depth")

    def __init__(self, label: np.ndarray, parent: _Node | None, depth: int):
        self.label = label  # tokens on the edge from the parent to this node
        self.children: dict[int, _Node] = {}  # keyed by the first token of the child's label
        self.parent = parent
        self.value: Any = None
        self.depth = depth  # tokens from the root to the end of this node's label

    @property
    def above(self) -> _Node:
        """The parent of a node below the root (the only one without)."""
        assert self.parent is not None, "the root has no parent"
        return self.parent


@dataclass(frozen=True)
class Match:
    """Result of `TokenTrie.search` for a query of `len(query)` tokens.

    `prefix` is the deepest stored sequence that is a prefix of the query (usable as is);
    `extension` is a stored sequence that shares `shared` tokens with the query and is longer
    than that (usable after trimming). Either may be None.
    """

    shared: int
    prefix_len: int
    prefix_value: Any
    extension_len: int
    extension_value: Any


class TokenTrie:
    """Maps token sequences to values; finds the stored sequence sharing the longest prefix."""

    def __init__(self) -> None:
        self._root = _Node(np.empty(0, dtype=np.int64), None, 0)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, tokens, value: Any) -> Any:
        """Store `value` under `tokens`; returns the value it replaced (or None)."""
        tokens = as_tokens(tokens)
        node, pos = self._root, 0
        while pos < len(tokens):
            child = node.children.get(int(tokens[pos]))
            if child is None:
                leaf = _Node(tokens[pos:].copy(), node, len(tokens))
                node.children[int(tokens[pos])] = leaf
                node = leaf
                break
            m = common_prefix_len(child.label, tokens[pos:])
            if m < len(child.label):
                child = self._split(child, m)
            node, pos = child, pos + m
        previous = node.value
        node.value = value
        if previous is None:
            self._size += 1
        return previous

    def get(self, tokens) -> Any:
        node = self._find(as_tokens(tokens))
        return None if node is None else node.value

    def remove(self, tokens) -> Any:
        """Remove `tokens`; returns its value (or None when absent)."""
        node = self._find(as_tokens(tokens))
        if node is None or node.value is None:
            return None
        value, node.value = node.value, None
        self._size -= 1
        self._prune(node)
        return value

    def search(self, tokens) -> Match:
        """The stored sequences most useful as a KV prefix for `tokens`."""
        tokens = as_tokens(tokens)
        node, pos = self._root, 0
        best_prefix: _Node | None = None
        below: _Node | None = None  # subtree whose sequences all share exactly `pos` tokens
        while True:
            if node.value is not None:
                best_prefix = node
            if pos == len(tokens):
                below = node if node.children else None
                break
            child = node.children.get(int(tokens[pos]))
            if child is None:
                below = node  # its other branches also share `pos` tokens
                break
            m = common_prefix_len(child.label, tokens[pos:])
            if m < len(child.label):
                pos, below = pos + m, child
                break
            node, pos = child, pos + m
        ext = self._any_value_below(below, exclude=node if below is node else None)
        return Match(
            shared=pos,
            prefix_len=best_prefix.depth if best_prefix else 0,
            prefix_value=best_prefix.value if best_prefix else None,
            extension_len=ext.depth if ext else 0,
            extension_value=ext.value if ext else None,
        )

    def prefixes_of(self, tokens) -> list[tuple[int, Any]]:
        """Stored sequences that are strict prefixes of `tokens`, as (length, value)."""
        tokens = as_tokens(tokens)
        found, node, pos = [], self._root, 0
        while pos < len(tokens):
            if node.value is not None and node.depth < len(tokens):
                found.append((node.depth, node.value))
            child = node.children.get(int(tokens[pos]))
            if child is None or common_prefix_len(child.label, tokens[pos:]) < len(child.label):
                break
            node, pos = child, pos + len(child.label)
        return found

    def candidates(self, tokens) -> list[tuple[int, Any, bool]]:
        """Every stored sequence usable for `tokens` as (tokens usable, value, needs trimming
        beyond that): each stored prefix (the exact match too) and the shallowest extension."""
        tokens = as_tokens(tokens)
        found = [(n, v, False) for n, v in self.prefixes_of(tokens)]
        exact = self.get(tokens)
        if exact is not None:
            found.append((len(tokens), exact, False))
        match = self.search(tokens)
        if match.extension_value is not None and match.extension_value is not exact:
            found.append((match.shared, match.extension_value, True))
        return found

    def items(self) -> Iterator[tuple[np.ndarray, Any]]:
        """All (tokens, value) pairs, depth first."""
        stack: list[tuple[_Node, list[np.ndarray]]] = [(self._root, [])]
        while stack:
            node, parts = stack.pop()
            parts = [*parts, node.label]
            if node.value is not None:
                yield np.concatenate(parts), node.value
            stack.extend((c, parts) for c in node.children.values())

    # internals

    def _find(self, tokens: np.ndarray) -> _Node | None:
        node, pos = self._root, 0
        while pos < len(tokens):
            child = node.children.get(int(tokens[pos]))
            if child is None or len(child.label) > len(tokens) - pos:
                return None
            if common_prefix_len(child.label, tokens[pos:]) < len(child.label):
                return None
            node, pos = child, pos + len(child.label)
        return node

    def _split(self, child: _Node, m: int) -> _Node:
        """Insert a node after the first `m` tokens of `child`'s edge; returns it."""
        parent = child.above
        mid = _Node(child.label[:m], parent, child.depth - len(child.label) + m)
        parent.children[int(child.label[0])] = mid
        child.label = child.label[m:]
        child.parent = mid
        mid.children[int(child.label[0])] = child
        return mid

    def _prune(self, node: _Node) -> None:
        """Drop valueless leaves and merge valueless single-child nodes (keeps edges long)."""
        while node is not self._root and node.value is None and not node.children:
            parent = node.above
            del parent.children[int(node.label[0])]
            node = parent
        if node is not self._root and node.value is None and len(node.children) == 1:
            (child,) = node.children.values()
            child.label = np.concatenate([node.label, child.label])
            child.parent = node.above
            node.above.children[int(child.label[0])] = child

    @staticmethod
    def _any_value_below(node: _Node | None, exclude: _Node | None) -> _Node | None:
        """The shallowest valued node in `node`'s subtree (the cheapest one to trim)."""
        if node is None:
            return None
        level = [node]
        while level:
            for n in level:
                if n.value is not None and n is not exclude:
                    return n
            level = [c for n in level for c in n.children.values()]
        return None
