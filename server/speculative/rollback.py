"""Undo the rejected tail of a verify forward, leaving the state plain decoding leaves.

KV layers (KVCache, QuantizedKVCache, RotatingKVCache inside its window) are trimmed. A hybrid's
recurrent layers (ArraysCache: linear attention, SSM) cannot be: their state before the verify is
kept (MLX arrays are values; the layers assign new ones) and, on a rejection, put back, the KV
layers trimmed to the same point, and the accepted tokens run through the model again.
"""

from __future__ import annotations

from typing import Any


def _recurrent(layer: Any) -> bool:
    from mlx_lm.models.cache import ArraysCache

    return isinstance(layer, ArraysCache)


def verify_room(cache: list[Any]) -> int | None:
    """The most tokens a verify may feed and still be undone exactly (None: no limit). Each
    layer is recurrent (restored) or trimmable; a sliding window must not wrap meanwhile."""
    from mlx_lm.models.cache import RotatingKVCache

    room = None
    for layer in cache:
        if _recurrent(layer):
            continue
        if isinstance(layer, RotatingKVCache):
            left = max(0, layer.max_size - layer.offset - 1)
            room = left if room is None else min(room, left)
        elif not layer.is_trimmable():
            return 0
    return room


def restorable(cache: list[Any]) -> bool:
    """Whether a Checkpoint taken now can undo what is fed next: every layer recurrent (put
    back) or trimmable (a window that has not wrapped)."""
    return all(_recurrent(layer) or layer.is_trimmable() for layer in cache)


class Checkpoint:
    """The recurrent layers' state before a verify (nothing to keep for KV-only caches)."""

    def __init__(self, cache: list[Any]):
        self.cache = cache
        self.saved = [(layer, list(layer.cache)) for layer in cache if _recurrent(layer)]

    def keep(self, model: Any, fed: list[int], n_keep: int) -> bool:
        """Leave the cache holding the tokens before the verify and `fed[:n_keep]`; True when
        the accepted tokens had to run again (a recurrent layer saw rejected ones)."""
        drop = len(fed) - n_keep
        if drop <= 0:
            return False
        if not self.saved:
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(self.cache, drop)
            return False
        import mlx.core as mx

        for layer, arrays in self.saved:
            layer.cache = list(arrays)
        for layer in self.cache:
            if not _recurrent(layer):
                layer.trim(len(fed))
        if n_keep:
            model(mx.array([fed[:n_keep]]), cache=self.cache)
        return True
