"""A verify's attention computed unfused equals MLX's fused call: grouped heads, the causal mask
over a cache longer than the queries, an array mask; other shapes go to the original."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (8, 2)])
@pytest.mark.parametrize("mask_kind", [None, "causal", "additive", "boolean"])
def test_unfused_equals_mlx_fused_attention(heads, kv_heads, mask_kind):
    import mlx.core as mx

    from server.model.verify_attention import unfused

    mx.random.seed(0)
    n, length, dim = 5, 37, 16
    q = mx.random.normal((1, heads, n, dim))
    k = mx.random.normal((1, kv_heads, length, dim))
    v = mx.random.normal((1, kv_heads, length, dim))
    mask = mask_kind
    if mask_kind == "boolean":
        mask = mx.random.uniform(shape=(1, 1, n, length)) > 0.3
    elif mask_kind == "additive":
        mask = mx.random.normal((1, 1, n, length))
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    got = unfused(q, k, v, 0.25, mask)
    assert got.shape == want.shape
    assert mx.allclose(got, want, atol=1e-5).item()


def test_only_a_few_queries_over_a_plain_cache_go_unfused():
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, KVCache

    from server.model.verify_attention import few_queries

    calls = []

    def original(q, k, v, cache, scale, mask, sinks=None):
        calls.append(q.shape[2])
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)

    attention = few_queries(original)
    k = v = mx.zeros((1, 2, 40, 8))
    for n in (1, 2, 17, 33):
        attention(mx.zeros((1, 2, n, 8)), k, v, KVCache(), 1.0, "causal" if n > 1 else None)
    attention(mx.zeros((1, 2, 5, 8)), k, v, KVCache(), 1.0, mx.zeros((5, 40)) > 0)
    attention(mx.zeros((1, 2, 5, 8)), k, v, BatchKVCache([0]), 1.0, "causal")
    assert calls == [1, 33, 5]  # one query, a prefill chunk, a batch: the original's


def test_copy_drafting_through_it_gives_plain_decodings_tokens():
    # Installed as the worker installs it off Metal; plain decoding (one query) is untouched.
    from server.model import verify_attention
    from server.model.loading import load_model
    from tests.conftest import tiny_model
    from tests.server.speculative.test_solo_drafting import PROMPT, decode

    loaded = load_model(str(tiny_model(family="qwen2")))
    prompt = loaded.tokenizer.encode(PROMPT)
    plain, _, _ = decode(loaded, prompt, 48)
    assert verify_attention.install(loaded.model)
    assert verify_attention.install(loaded.model)  # once only
    tokens, _, drafting = decode(loaded, prompt, 48, mode="copy")
    assert tokens == plain
    assert drafting.record.verify_steps > 0
