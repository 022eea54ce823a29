"""M-RoPE positions (Qwen-VL): where an image's tokens sit, and the offset decode carries.

An image of (t, h, w) merged patches takes 3-D positions starting where its text left off, and
the text after it resumes one past their largest: positions then trail the token index by a
delta, which follows the sequence into decode. Text positions have t = h = w, where M-RoPE is
plain RoPE, so mlx-lm's language model decodes with its own RoPE shifted by the delta. The delta
rides on the sequence's KV cache (`PositionedKVCache`) through the lone decode, drafts and their
rollback, and into the batch, whose per-row RoPE offsets take it at the merge. While a prefill
chunk runs, the cache can carry that chunk's 3-D positions too, which the RoPE then applies with
mlx-vlm's M-RoPE for the family (Qwen3.5's image chunks run on mlx-lm's model so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mlx_lm.models.cache import BatchKVCache, KVCache


def rope_delta(spans: Sequence[Any], merge: int) -> int:
    """How far the text after the last of `spans` trails its token index (0 or less)."""
    return sum(_extent(s.grid, merge) - (s.end - s.start) for s in spans)


def positions(spans: Sequence[Any], merge: int, start: int, end: int) -> np.ndarray:
    """The (3, end - start) positions of tokens [start, end) of a prompt with `spans` (each
    with its processor's `grid`, (t, h, w) in patches), as mlx-vlm's `get_rope_index` lays
    them out."""
    index = np.arange(start, end)
    out = np.broadcast_to(index, (3, end - start)).copy()
    delta = 0
    for s in sorted(spans, key=lambda s: s.start):
        if s.start >= end:
            break
        after = index >= s.end
        inside = (index >= s.start) & ~after
        if inside.any():
            h, w = s.grid[1] // merge, s.grid[2] // merge
            k = index[inside] - s.start
            base = s.start + delta
            out[:, inside] = base + np.stack([k // (h * w), (k // w) % h, k % w])
        delta += _extent(s.grid, merge) - (s.end - s.start)
        out[:, after] = index[after] + delta
    return out


def _extent(grid: Sequence[int], merge: int) -> int:
    """How many positions an image spans: its longest side in merged patches."""
    return max(int(grid[0]), int(grid[1]) // merge, int(grid[2]) // merge)


class RopeOffset(int):
    """A cache's length (what indexes its arrays) that also carries the sequence's delta, and
    a prefill chunk's explicit (3, 1, L) positions while one runs."""

    delta: int
    positions: Any

    def __new__(cls, length: int, delta: int, positions: Any = None) -> RopeOffset:
        out = super().__new__(cls, length)
        out.delta, out.positions = delta, positions
        return out


class PositionedKVCache(KVCache):
    """A KV cache whose RoPE offset is its length plus the sequence's M-RoPE delta."""

    def __init__(self, delta: int = 0):
        self.rope_delta = delta
        self.chunk_positions: Any = None  # set only while a prefill chunk runs
        super().__init__()

    @property
    def offset(self) -> int:
        return RopeOffset(self._length, self.rope_delta, self.chunk_positions)

    @offset.setter
    def offset(self, value: int) -> None:
        self._length = int(value)

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchKVCache:
        """The batch's cache: its per-row RoPE offsets (used for nothing else) take each
        sequence's delta."""
        import mlx.core as mx

        batch = BatchKVCache.merge(caches)
        batch.offset = batch.offset + mx.array([getattr(c, "rope_delta", 0) for c in caches])
        return batch


def positioned(cache: list[Any], delta: int) -> list[Any]:
    """`cache` as PositionedKVCache layers with `delta` (new objects: a stored entry is never
    changed), for a prompt whose images put its decode positions `delta` from its length."""
    out: list[Any] = []
    for c in cache:
        if not isinstance(c, KVCache):
            out.append(c)
            continue
        p = PositionedKVCache(delta)
        p.keys, p.values, p.offset = c.keys, c.values, int(c.offset)
        out.append(p)
    return out


def install_shifted_rope(model: Any, mrope: Any = None) -> int:
    """Make every attention layer's RoPE honour a RopeOffset: its delta, and its explicit
    positions through `mrope` (mlx-vlm's rotary embedding for the family) where it has them.
    Returns how many layers."""
    import mlx.nn as nn

    class ShiftedRope(nn.Module):
        def __init__(self, rope: Any):
            super().__init__()
            self.rope = rope

        def __call__(self, x: Any, offset: Any = 0) -> Any:
            if isinstance(offset, RopeOffset):
                if offset.positions is not None and mrope is not None:
                    return mrope.apply_rotary(x, x, offset.positions, unsqueeze_dim=1)[0]
                offset = int(offset) + offset.delta
            return self.rope(x, offset=offset)

    n = 0
    for layer in model.layers:
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "rope"):
            attention.rope = ShiftedRope(attention.rope)
            n += 1
    return n
