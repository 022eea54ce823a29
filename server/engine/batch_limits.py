"""What a batch may hold: which models can batch, a sequence's KV size, what a store may add."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

DECODE_CONCURRENCY = 32  # mlx_lm.server's --decode-concurrency default (--decode-concurrency)
PROMPT_CONCURRENCY = 8  # its --prompt-concurrency default (--prompt-concurrency)


def cannot_batch(model: Any) -> str | None:
    """Why this model's caches cannot be merged into a batch (None: they can)."""
    from mlx_lm.models.cache import make_prompt_cache

    kinds = {type(c).__name__ for c in make_prompt_cache(model) if not hasattr(c, "merge")}
    return f"cache kinds {sorted(kinds)} cannot batch" if kinds else None


def kv_bytes_per_token(model: Any) -> int:
    """One token's KV bytes: 2 (K, V) x layers x kv heads x head dim x the compute dtype's size,
    read off a floating-point weight (a packed 4-bit weight's uint32 would double it). Hybrid and
    sliding-window layers hold less, so it overestimates them."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    try:
        # A multimodal wrapper's own args hold a text_config; its language model has the shape.
        args = getattr(getattr(model, "language_model", None), "args", None) or model.args
        heads = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
        head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
        leaves = cast(
            list[tuple[str, Any]], tree_flatten(model.parameters())
        )  # mlx types it widely
        floats = [w.dtype for _, w in leaves]
        itemsize = next(d.size for d in floats if mx.issubdtype(d, mx.floating))
        return 2 * len(model.layers) * heads * head_dim * itemsize
    except Exception:  # unknown shape: no memory gating beyond the batch size
        return 0


def store_reserve(estimates: Iterable[int], writer_copies: bool) -> int:
    """Memory a store may add for a moment: a finished sequence's state is copied into the prefix
    cache before its own is freed, and on MLX CUDA the disk writer gets a copy of its own."""
    largest = max(estimates, default=0)
    return largest * (2 if writer_copies else 1)
