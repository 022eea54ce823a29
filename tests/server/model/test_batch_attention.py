"""Per-sequence decode attention for batches: the same greedy tokens as mlx-lm's masked
attention and as each prompt decoded alone, with prompts of different lengths (left padding)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


PROMPTS = [
    "Tell me about the river and the hills around it.",
    "Seven times six?",
    "Write a short poem about rain falling on the old town square at night.",
]


def batch_tokens(loaded, prompts: list[list[int]], steps: int) -> list[list[int]]:
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(loaded.model, completion_batch_size=8)
    uids = gen.insert(prompts, max_tokens=[steps] * len(prompts))
    out = {u: [] for u in uids}
    while any(len(v) < steps for v in out.values()):
        for r in gen.next()[1]:
            out[r.uid].append(r.token)
    gen.close()
    return [out[u] for u in uids]


def alone_tokens(loaded, prompt: list[int], steps: int) -> list[int]:
    import mlx.core as mx
    from mlx_lm import stream_generate

    return [
        r.token
        for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=steps)
    ]


def test_per_sequence_attention_decodes_like_the_mask_and_like_alone(loaded):
    from server.model import batch_attention

    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 3  # the batch needs left padding
    import mlx.core as mx

    module = sys.modules[type(loaded.model).__module__]
    masked_sdpa = module.scaled_dot_product_attention
    masked_decode_calls = []

    def spy(queries, keys, values, cache, scale, mask, sinks=None):
        if queries.shape[2] == 1 and isinstance(mask, mx.array):
            masked_decode_calls.append(queries.shape[0])
        return masked_sdpa(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    module.scaled_dot_product_attention = spy
    try:
        masked = batch_tokens(loaded, prompts, 16)
        assert masked_decode_calls and max(masked_decode_calls) == 3
        masked_decode_calls.clear()
        assert batch_attention.install(loaded.model)
        assert batch_attention.install(loaded.model)  # once is enough: not wrapped twice
        assert module.scaled_dot_product_attention.__wrapped__ is spy
        per_sequence = batch_tokens(loaded, prompts, 16)
    finally:
        module.scaled_dot_product_attention = masked_sdpa
    assert masked_decode_calls == []  # every batched decode step took the per-sequence path
    assert per_sequence == masked
    assert per_sequence == [alone_tokens(loaded, p, 16) for p in prompts]
