"""A verify's attention (a few queries over the whole cache) without MLX CUDA's cuDNN SDPA.

MLX CUDA (0.32) sends attention of more than one query to cuDNN's SDPA, whose graph it builds
once per shape, keyed on the key length among others (`sdpa_cache` in its
`scaled_dot_product_attention.cpp`; one-query decoding unslices the cache so the key is stable).
A verify's key length is new every cycle, so each verify would build a graph on the host before
its forward: a plausible cause of verify cycles measured at 4.6-5.8x a plain step where the same
forward, at a fixed length, cost 1.2x. Here 2 to 32 queries are computed as MLX's own fallback
computes them (scaled matmul, causal mask, precise softmax, matmul): no per-shape graph, and
reading the cache once as the fused kernel does.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("server.engine")
ATTENTION = "scaled_dot_product_attention"  # mlx-lm's attention, as each model module imports it
MOST_QUERIES = 32  # a verify feeds at most 1 + 16 tokens; longer chunks are prefill's


def install(model: Any) -> bool:
    """Route the model's attention of 2 to MOST_QUERIES queries through `unfused`; True when the
    model's module exposes mlx-lm's `scaled_dot_product_attention` to wrap."""
    module = sys.modules.get(type(model).__module__)
    current = getattr(module, ATTENTION, None)
    if module is None or current is None:
        return False
    wrapped = current
    while wrapped is not None:  # installed already, maybe under another wrapper
        if getattr(wrapped, "_unfused_verify", False):
            return True
        wrapped = getattr(wrapped, "__wrapped__", None)
    setattr(module, ATTENTION, few_queries(current))
    log.info("verify attention: 2-%d queries unfused (%s)", MOST_QUERIES, module.__name__)
    return True


def few_queries(original):
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache

    def attention(queries, keys, values, cache, scale, mask, sinks=None):
        n = queries.shape[2]
        if (
            n < 2
            or n > MOST_QUERIES
            or sinks is not None
            or hasattr(cache, "bits")  # quantized: mlx-lm's own path
            or isinstance(cache, BatchKVCache)
            or not (isinstance(mask, mx.array) or mask is None or mask == "causal")
        ):
            return original(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)
        return unfused(queries, keys, values, scale, mask)

    # Through __dict__: mypy lets no function take attributes.
    attention.__dict__.update(_unfused_verify=True, __wrapped__=original)
    return attention


def unfused(queries: Any, keys: Any, values: Any, scale: float, mask: Any) -> Any:
    """Attention as MLX's fallback computes it (mlx/fast.cpp): the queries are the last of the
    keys' positions; `mask` is None, "causal" or an array (boolean: kept where true; else added)."""
    import mlx.core as mx

    batch, heads, n, dim = queries.shape
    kv_heads, length = keys.shape[1], keys.shape[2]
    repeats = heads // kv_heads
    q = mx.array(scale, queries.dtype) * queries
    if repeats > 1:  # query head h reads key head h // repeats
        q = q.reshape(batch, kv_heads, repeats, n, dim)
        keys, values = mx.expand_dims(keys, 2), mx.expand_dims(values, 2)
    scores = q @ keys.swapaxes(-1, -2)
    if isinstance(mask, mx.array):
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
        else:
            scores = scores + mask
    elif mask == "causal":
        first = max(length - n, 0)
        seen = mx.arange(first, first + n)[:, None] >= mx.arange(length)[None]
        scores = mx.where(seen, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
    out = mx.softmax(scores, axis=-1, precise=True) @ values
    return out.reshape(batch, heads, n, -1) if repeats > 1 else out
