"""What a batch may hold: which models can batch, a sequence's KV size, the memory budget."""

from __future__ import annotations

from typing import Any

DECODE_CONCURRENCY = 32  # mlx_lm.server's --decode-concurrency default (--decode-concurrency)
PROMPT_CONCURRENCY = 8  # its --prompt-concurrency default (--prompt-concurrency)


def cannot_batch(model: Any) -> str | None:
    """Why this model's caches cannot be merged into a batch (None: they can)."""
    from mlx_lm.models.cache import make_prompt_cache

    kinds = {type(c).__name__ for c in make_prompt_cache(model) if not hasattr(c, "merge")}
    return f"cache kinds {sorted(kinds)} cannot batch" if kinds else None


def kv_bytes_per_token(model: Any) -> int:
    """A simple upper estimate of one token's KV bytes: 2 (K, V) x layers x kv heads x head dim
    x the weights' item size; hybrid and sliding-window layers hold less, so it overestimates."""
    try:
        args = model.args
        heads = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
        head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
        itemsize = next(iter(_leaves(model.parameters()))).dtype.size
        return 2 * len(model.layers) * heads * head_dim * max(itemsize, 2)
    except Exception:  # unknown shape: no memory gating beyond the batch size
        return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list | tuple):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


def memory_budget(cache_stats: dict | None) -> int:
    """The device's limit (Metal's recommended working set, else RAM) less the weights and the
    prefix cache's RAM budget: what running sequences' KV may use."""
    import mlx.core as mx
    import psutil

    try:
        limit = int(mx.device_info().get("max_recommended_working_set_size", 0))
    except Exception:
        limit = 0
    limit = limit or int(psutil.virtual_memory().total)
    ram = (cache_stats or {}).get("ram") or {}
    cache_budget = int(ram.get("budget_bytes", 0) or 0)
    return max(0, int(limit * 0.9) - int(mx.get_active_memory()) - cache_budget)
