"""KV state as mlx-lm cache lists: their size in tokens and bytes, trimmability, snapshots.

Works for every kind mlx-lm makes (KVCache, QuantizedKVCache, RotatingKVCache, ArraysCache and
lists mixing them). Only call these on the generation thread: they build and evaluate arrays.
"""

from __future__ import annotations

import copy
from typing import Any, cast


def cache_nbytes(cache: list[Any]) -> int:
    return sum(c.nbytes for c in cache)


def cache_len(cache: list[Any]) -> int:
    """Tokens held by a cache list (the first layer that counts them; ArraysCache does not)."""
    for c in cache:
        if hasattr(c, "offset"):
            return int(c.offset)
    return max((c.size() for c in cache), default=0)


def trimmable(cache: list[Any]) -> bool:
    """Whether the list can be trimmed back (mlx-lm's `can_trim_prompt_cache`)."""
    from mlx_lm.models.cache import can_trim_prompt_cache

    return can_trim_prompt_cache(cache)


def trimmable_at(cache: list[Any], n: int) -> bool:
    """Whether this list will still be trimmable once it holds `n` tokens."""
    from mlx_lm.models.cache import RotatingKVCache

    return all(
        n < c.max_size if isinstance(c, RotatingKVCache) else c.is_trimmable() for c in cache
    )


def snapshot(cache: list[Any], n: int, detach: bool = True) -> list[Any] | None:
    """A new cache list holding the first `n` tokens of `cache`, or None when that needs
    trimming a cache that cannot be trimmed.

    KVCache layers become slices; with `detach` (what the store keeps), exact-length contiguous
    copies, evaluated, so a writer thread serializes them without running MLX ops. Other kinds
    are deep-copied and trimmed. MLX arrays are values: extending the result never changes
    `cache`.
    """
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    from server.model.mrope import PositionedKVCache

    total = cache_len(cache)
    if n > total or (n < total and not trimmable(cache)):
        return None
    out = []
    for c in cache:
        # A positioned layer is stored plain: its delta is the prompt's, not the entry's.
        if type(c) in (KVCache, PositionedKVCache) and c.keys is not None:
            assert c.values is not None  # set together with keys
            k = KVCache()
            k.keys, k.values, k.offset = c.keys[..., :n, :], c.values[..., :n, :], n
            if detach:
                k.keys, k.values = mx.contiguous(k.keys), mx.contiguous(k.values)
            out.append(k)
            continue
        c = copy.deepcopy(c)
        if n < total:
            c.trim(total - n)
        out.append(c)
    if detach:
        evaluate(out)
    return out


def host_reads_move_buffers() -> bool:
    """Whether reading an array on the host moves its buffer: MLX CUDA then copies a GPU buffer
    into managed memory for good, which the GPU pages back on its next use."""
    import mlx.core as mx

    return mx.cuda.is_available() and mx.default_device() == mx.gpu


def writer_copy(cache: list[Any]) -> list[Any]:
    """The cache list in buffers of its own, evaluated: what the disk writer may read off the
    GPU while the stored entry stays where the next prefill reads it."""
    import mlx.core as mx
    from mlx.utils import tree_map

    out = []
    for c in cache:
        mine = copy.copy(c)
        mine.state = tree_map(lambda a: a * 1 if isinstance(a, mx.array) else a, c.state)
        out.append(mine)
    evaluate(out)
    return out


def evaluate(cache: list[Any]) -> None:
    """Evaluate every array of a cache list's state."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    # mlx types tree_flatten as a list or a dict; without `destination` it is the list.
    flat = cast(list[tuple[str, Any]], tree_flatten([c.state for c in cache]))
    mx.eval([a for _, a in flat if isinstance(a, mx.array)])
