"""Helpers of the prefix store's tests: random prompts, real prefills of the tiny model's MLX
caches, and a store over them."""

from __future__ import annotations

import numpy as np
import pytest

from server.prefix_cache.store import PrefixStore

mx = pytest.importorskip("mlx.core")

CHUNK = 256


def rand_tokens(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(10, 8000, n).tolist()


def prefill(model, cache, tokens):
    """Feed `tokens` into `cache`; returns the logits after the last one."""
    ids = mx.array(tokens)[None]
    logits = None
    for i in range(0, len(tokens), CHUNK):
        logits = model(ids[:, i : i + CHUNK], cache=cache)
        mx.eval(logits, [c.state for c in cache])
    return logits[0, -1]


def cold(model, tokens):
    """(cache, next-token logits) from a prefill with nothing cached."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    return cache, prefill(model, cache, tokens)


def warm_logits(model, hit, tokens):
    return prefill(model, hit.cache, tokens[hit.cached_tokens :])


def assert_close(a, b):
    assert mx.allclose(a, b, atol=1e-4, rtol=1e-4).item(), float(mx.abs(a - b).max())


def make(model, tmp_path=None, **kw):
    kw.setdefault("ram_bytes", 1 << 30)
    kw.setdefault("min_disk_gain", 1)  # test prompts are a few hundred tokens
    if tmp_path is not None:
        kw.setdefault("disk_root", tmp_path / "kv")
    return PrefixStore(model, model_id="m1", tokenizer_id="t1", **kw)
