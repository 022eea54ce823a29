"""Every cache kind mlx-lm makes, in RAM and on disk: KVCache, RotatingKVCache, ArraysCache,
QuantizedKVCache and lists mixing them. Untrimmable ones are served only from exact checkpoints.
"""

from __future__ import annotations

import pytest

from server.engine.prefill import checkpoints, prefill
from server.model.kv_state import cache_len, snapshot, trimmable
from tests.conftest import tiny_model, wait_until
from tests.server.prefix_cache.store_helpers import assert_close, make, rand_tokens

mx = pytest.importorskip("mlx.core")

FAMILIES = ["qwen2", "qwen3_next", "gemma3_text"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    from server.model.loading import load_model

    return load_model(
        str(tiny_model(**({} if request.param == "qwen2" else {"family": request.param})))
    )


@pytest.fixture(scope="module", params=["qwen3_next", "gemma3_text"])
def untrimmable_model(request):
    from server.model.loading import load_model

    return load_model(str(tiny_model(family=request.param)))


def run(model, cache, tokens):
    """Prefill all of `tokens` into `cache`; the logits after the last one."""
    prefill(model, cache, tokens, 0, len(tokens) - 1, step=128)
    logits = model(mx.array(tokens[-1:])[None], cache=cache)
    return logits[0, -1]


def fresh(model):
    from mlx_lm.models.cache import make_prompt_cache

    return make_prompt_cache(model)


def test_a_checkpoint_from_disk_continues_exactly_like_a_cold_prefill(family_model, tmp_path):
    model = family_model.model
    tokens = rand_tokens(700, 1)
    ckpt = 500
    cache = fresh(model)
    prefill(model, cache, tokens, 0, ckpt, step=128)
    store = make(model, tmp_path)
    assert store.store(tokens[:ckpt], cache)
    assert store.flush() == 1

    again = make(model, tmp_path)  # a restart: the entry is on disk only
    hit = again.lookup(tokens)
    assert (hit.source, hit.cached_tokens) == ("disk", ckpt)
    prefill(model, hit.cache, tokens, ckpt, len(tokens) - 1, step=128)
    warm = model(mx.array(tokens[-1:])[None], cache=hit.cache)[0, -1]
    assert_close(warm, run(model, fresh(model), tokens))


def test_untrimmable_checkpoints_are_used_whole_and_never_trimmed(untrimmable_model):
    model = untrimmable_model.model
    tokens = rand_tokens(600, 2)
    cache = fresh(model)
    stops = checkpoints(cache, 0, 500, system_len=200)
    assert stops == [200, 500]
    assert checkpoints(fresh(family_model_plain()), 0, 500, system_len=200) == []
    store = make(model)
    prefill(
        model,
        cache,
        tokens,
        0,
        500,
        step=128,
        stops=stops,
        on_stop=lambda n: store.store(tokens[:n], cache, kind="system" if n == 200 else "prompt"),
    )
    assert store.lookup(tokens).cached_tokens == 500
    # Diverging inside the checkpoint: the shorter system checkpoint, not a trimmed copy.
    assert store.lookup(tokens[:450] + rand_tokens(50, 3)).cached_tokens == 200
    # The checkpoint itself again: its last token must run, so the next shorter one serves.
    assert store.lookup(tokens[:500]).cached_tokens == 200
    assert store.lookup(tokens[:150] + rand_tokens(50, 4)).cached_tokens == 0


def test_an_extension_replaces_its_ancestor_but_not_the_system_checkpoint(family_model):
    model = family_model.model
    tokens = rand_tokens(700, 5)
    cache = fresh(model)
    store = make(model)
    prefill(model, cache, tokens, 0, 200, step=128)
    store.store(tokens[:200], cache, kind="system")
    for end in (400, 600, 700):
        prefill(model, cache, tokens, cache_len(cache), end, step=128)
        store.store(tokens[:end], cache)
    held = sorted(e["tokens"] for e in store.list_entries())
    assert held == ([700] if trimmable(cache) else [200, 700])


def family_model_plain():
    """The plain-attention tiny model: every prefix of its cache is served by trimming."""
    from server.model.loading import load_model

    return load_model(str(tiny_model())).model


def mixed_cache():
    """One list of every kind, filled with 300 tokens of random KV."""
    from mlx_lm.models.cache import ArraysCache, KVCache, QuantizedKVCache, RotatingKVCache

    layers = [KVCache(), QuantizedKVCache(group_size=32, bits=8), RotatingKVCache(max_size=64)]
    for layer in layers:
        for _ in range(3):
            k = mx.random.normal((1, 2, 100, 64))
            layer.update_and_fetch(k, k * 2)
    arrays = ArraysCache(size=2)
    arrays[0], arrays[1] = mx.random.normal((1, 3, 32)), mx.random.normal((1, 2, 16, 16))
    return [arrays, *layers]


def state_arrays(cache):
    from mlx.utils import tree_flatten

    return [a for _, a in tree_flatten([c.state for c in cache]) if isinstance(a, mx.array)]


def test_a_list_mixing_every_kind_round_trips_through_ram_and_disk(tiny_model_path, tmp_path):
    cache = mixed_cache()
    assert cache_len(cache) == 300 and not trimmable(cache)
    assert snapshot(cache, 250) is None  # would need trimming the untrimmable layers
    tokens = rand_tokens(300, 6)
    store = make(None, tmp_path)
    assert store.store(tokens, cache)
    store.flush()
    again = make(None, tmp_path)
    hit = again.lookup(tokens + [7, 8])
    assert (hit.source, hit.cached_tokens) == ("disk", 300)
    assert [type(c) for c in hit.cache] == [type(c) for c in cache]
    for got, want in zip(state_arrays(hit.cache), state_arrays(snapshot(cache, 300)), strict=True):
        assert got.shape == want.shape and mx.array_equal(got, want).item()


def test_a_disk_entry_is_read_once_and_the_verified_bytes_are_what_loads(
    tiny_model_path, tmp_path, monkeypatch
):
    from server.prefix_cache.disk import DiskTier

    cache = mixed_cache()
    tokens = rand_tokens(300, 7)
    store = make(None, tmp_path)
    store.store(tokens, cache)
    store.flush()
    verify = DiskTier._verify

    def verify_then_clobber(self, path, entry):
        checked = verify(self, path, entry)
        path.write_bytes(b"\0" * entry["bytes"])  # a second read would see this
        return checked

    monkeypatch.setattr(DiskTier, "_verify", verify_then_clobber)
    hit = make(None, tmp_path).lookup(tokens + [9])
    assert (hit.source, hit.cached_tokens) == ("disk", 300)


def test_the_system_and_tools_prefix_is_shared_by_sessions_and_survives_strict_templates(
    tiny_model_path, monkeypatch
):
    from server.model.loading import load_model
    from server.prompt.render import PromptRenderer
    from server.request import ChatRequest
    from server.testing.scripts import WEATHER_TOOL

    tokenizer = load_model(str(tiny_model_path)).tokenizer
    renderer = PromptRenderer(tokenizer, {"max_position_embeddings": 32768})
    system = {"role": "system", "content": "You are a careful coding agent. " * 40}

    def render(text: str):
        messages = [system, {"role": "user", "content": text}]
        return renderer.render(ChatRequest(messages=messages, tools=[WEATHER_TOOL]))

    a, b = render("Fix the bug."), render("Write the docs instead.")
    assert a.system_len == b.system_len > 300
    assert a.tokens[: a.system_len] == b.tokens[: b.system_len]
    assert a.tokens[: a.system_len + 8] != b.tokens[: b.system_len + 8]  # the sessions diverge

    # Templates such as Qwen3's refuse a conversation without a user turn.
    original = tokenizer.apply_chat_template

    def strict(messages, **kwargs):
        if not any(m["role"] == "user" for m in messages):
            raise ValueError("No user query found in messages.")
        return original(messages, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", strict)
    assert render("Fix the bug.").system_len == a.system_len


def test_write_behind_puts_entries_on_disk_within_its_hourly_byte_budget(tmp_path):
    import time

    cache = mixed_cache()
    one = sum(c.nbytes for c in snapshot(cache, 300))
    store = make(None, tmp_path, write_delay=0.05, write_bytes_per_hour=int(one * 1.5))
    assert store.store(rand_tokens(300, 8), cache)
    assert wait_until(lambda: store.stats()["dirty_entries"] == 0)
    assert store.stats()["bytes_written_behind"] > 0
    # The second entry would pass the hour's budget: it waits, dirty, for the stop's flush.
    assert store.store(rand_tokens(300, 9), cache)
    time.sleep(0.5)
    assert store.stats()["dirty_entries"] == 1
    assert store.flush(budget_s=10) == 1
    assert store.stats()["dirty_entries"] == 0 and store.stats()["disk"]["entries"] == 2


def plain_state(cache):
    from mlx.utils import tree_flatten

    leaves = tree_flatten([c.state for c in cache])
    return [(k, v) for k, v in leaves if not isinstance(v, mx.array)]


def test_writer_copy_holds_the_same_state_in_buffers_of_its_own():
    from server.model.kv_state import cache_nbytes, writer_copy

    kept = snapshot(mixed_cache(), 300)
    before = mx.get_active_memory()
    mine = writer_copy(kept)
    assert mx.get_active_memory() - before >= cache_nbytes(kept)  # new buffers, not views
    assert [type(c) for c in mine] == [type(c) for c in kept]
    assert cache_len(mine) == 300 and plain_state(mine) == plain_state(kept)  # offsets, window
    for a, b in zip(state_arrays(mine), state_arrays(kept), strict=True):
        assert a.dtype == b.dtype and mx.array_equal(a, b).item()


def test_private_writes_put_a_copy_on_disk_and_skip_entries_without_one(tmp_path):
    import threading

    cache = mixed_cache()
    kept = snapshot(cache, 300)
    one = sum(c.nbytes for c in kept)
    # The writer thread never fires by itself here: each `writer_pass` is one of its passes.
    store = make(
        None, tmp_path, write_delay=3600, write_bytes_per_hour=int(one * 1.5), private_writes=True
    )

    def writer_pass() -> int:
        return store.write_dirty(threading.Event())

    first = rand_tokens(300, 10)
    assert store.store(first, cache)
    (entry,) = store.ram.entries.values()
    assert entry.to_write is not None and entry.to_write is not entry.cache
    assert writer_pass() == 1
    assert entry.on_disk and entry.to_write is None  # written from its copy, then dropped
    hit = make(None, tmp_path).lookup(first + [5])  # a restart reads the file back
    assert (hit.source, hit.cached_tokens) == ("disk", 300)
    for a, b in zip(state_arrays(hit.cache), state_arrays(kept), strict=True):
        assert mx.array_equal(a, b).item()

    # Past the hour's byte budget the copy is dropped and the entry waits for the stop's flush;
    # with budget to spare again, the writer still never reads the entry's own buffers.
    assert store.store(rand_tokens(300, 11), cache)
    assert writer_pass() == 0
    assert store.stats()["dirty_entries"] == 1
    assert all(e.to_write is None for e in store.ram.entries.values())
    store.writer.bytes_per_hour = None
    assert writer_pass() == 0
    assert store.flush(budget_s=10) == 1
    assert store.stats()["dirty_entries"] == 0 and store.stats()["disk"]["entries"] == 2
