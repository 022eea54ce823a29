"""KV state as mlx-lm cache lists: their size in tokens and bytes, and prefix snapshots."""

from __future__ import annotations

import copy
from typing import Any


def cache_nbytes(cache: list[Any]) -> int:
    return sum(c.nbytes for c in cache)


def cache_len(cache: list[Any]) -> int:
    """Tokens held by a cache list (the first layer that knows its size)."""
    for c in cache:
        if hasattr(c, "offset"):
            return int(c.offset)
    return max((c.size() for c in cache), default=0)


def snapshot(cache: list[Any], n: int) -> list[Any] | None:
    """A new cache list holding the first `n` tokens of `cache`, or None if it cannot trim.

    Plain KVCache layers become slices (no copy; the new arrays are exactly `n` long, so the
    first extension concatenates into a new buffer); other kinds are deep-copied and trimmed.
    """
    from mlx_lm.models.cache import KVCache

    out = []
    for c in cache:
        if type(c) is KVCache and c.keys is not None:
            if n > c.offset:
                return None
            k = KVCache()
            k.keys, k.values, k.offset = c.keys[..., :n, :], c.values[..., :n, :], n
            out.append(k)
            continue
        size = c.offset if hasattr(c, "offset") else c.size()
        if n != size and not (c.is_trimmable() and n < size):
            return None
        c = copy.deepcopy(c)
        if n < size:
            c.trim(size - n)
        out.append(c)
    return out
