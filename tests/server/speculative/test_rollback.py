"""Undoing a verify's rejected tail: a KV cache is trimmed, a hybrid's recurrent state restored
and the kept tokens run again; either way the state equals feeding the kept tokens alone."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["qwen2", "qwen3_next", "gemma3_text"])
def loaded(request):
    from server.model.loading import load_model
    from tests.conftest import tiny_model

    return load_model(str(tiny_model(family=request.param)))


def states(cache) -> list:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.kv_state import cache_len

    n = cache_len(cache)
    out = []
    for _, a in tree_flatten([c.state for c in cache]):
        if isinstance(a, mx.array) and a.ndim:
            out.append(a[..., :n, :] if a.ndim == 4 else a)
    return out


@pytest.mark.parametrize("keep", [0, 2, 5])
def test_keeping_part_of_a_verify_leaves_the_state_of_feeding_only_that(loaded, keep):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from server.speculative.rollback import Checkpoint, verify_room

    prompt = loaded.tokenizer.encode("A short prompt to start from, then some drafts.")
    fed = [11, 12, 13, 14, 15]

    def prefilled():
        cache = make_prompt_cache(loaded.model)
        loaded.model(mx.array([prompt]), cache=cache)
        return cache

    want = prefilled()
    if keep:
        loaded.model(mx.array([fed[:keep]]), cache=want)
    got = prefilled()
    room = verify_room(got)
    assert room is None or room >= len(fed)
    checkpoint = Checkpoint(got)
    loaded.model(mx.array([fed]), cache=got)
    rerun = checkpoint.keep(loaded.model, fed, keep)
    hybrid = loaded.config["model_type"] == "qwen3_next"
    assert rerun == (hybrid and keep < len(fed))
    for a, b in zip(states(want), states(got), strict=True):
        assert a.shape == b.shape and mx.allclose(a, b, atol=1e-5).item()


def test_a_sliding_window_gives_no_room_once_a_verify_would_wrap_it():
    from mlx_lm.models.cache import ArraysCache, KVCache, RotatingKVCache

    from server.speculative.rollback import verify_room

    window = RotatingKVCache(max_size=64)
    window.offset = 60
    assert verify_room([KVCache(), ArraysCache(2)]) is None
    assert verify_room([KVCache(), window]) == 3
    window.offset = 70
    assert verify_room([window]) == 0
