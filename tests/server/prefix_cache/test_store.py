"""The prefix KV cache with real MLX caches of the tiny model: hits, trims, eviction, disk."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.prefix_cache import disk_index
from server.prefix_cache.entry_format import tokens_key
from server.prefix_cache.store import PrefixStore
from server.prefix_cache.trie import TokenTrie, as_tokens, common_prefix_len
from tests.chat_inputs import anthropic_to_template_inputs, render_tokens

mx = pytest.importorskip("mlx.core")

CHUNK = 256


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


@pytest.fixture(scope="module")
def model(loaded):
    return loaded.model


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


@pytest.fixture(scope="module")
def base(model):
    """A 600-token prompt, its cold cache and logits."""
    tokens = rand_tokens(600, 0)
    cache, logits = cold(model, tokens)
    return tokens, cache, logits


# RAM tier: hits and misses at the token level


def test_exact_hit_leaves_one_token_and_matches_cold_logits(model, base):
    tokens, cache, logits = base
    pc = make(model)
    assert pc.store(tokens, cache)
    hit = pc.lookup(tokens)
    assert (hit.cached_tokens, hit.source) == (len(tokens) - 1, "ram")
    assert_close(warm_logits(model, hit, tokens), logits)


def test_shorter_prompt_hits_a_trimmed_copy(model, base):
    tokens, cache, _ = base
    pc = make(model)
    pc.store(tokens, cache)
    short = tokens[:400]
    hit = pc.lookup(short)
    assert hit.cached_tokens == 399
    assert_close(warm_logits(model, hit, short), cold(model, short)[1])


def test_divergent_prompt_reuses_the_shared_prefix_of_a_longer_entry(model, base):
    tokens, cache, _ = base
    pc = make(model)
    pc.store(tokens, cache)
    other = tokens[:300] + rand_tokens(50, 7)
    hit = pc.lookup(other)
    assert hit.cached_tokens == 300
    assert_close(warm_logits(model, hit, other), cold(model, other)[1])


def test_longer_prompt_extends_a_stored_prefix(model, base):
    tokens, cache, _ = base
    pc = make(model)
    pc.store(tokens, cache)
    longer = tokens + rand_tokens(40, 8)
    hit = pc.lookup(longer)
    assert hit.cached_tokens == len(tokens)
    assert_close(warm_logits(model, hit, longer), cold(model, longer)[1])


def test_miss_returns_a_fresh_empty_cache(model, base):
    tokens, cache, _ = base
    pc = make(model)
    pc.store(tokens, cache)
    hit = pc.lookup(rand_tokens(30, 9))
    assert (hit.cached_tokens, hit.source) == (0, "miss")
    assert all(c.offset == 0 for c in hit.cache)
    s = pc.stats()
    assert (s["hits"], s["misses"], s["hit_rate"]) == (0, 1, 0.0)


def test_extending_a_returned_cache_never_changes_the_stored_entry(model, base):
    tokens, cache, logits = base
    pc = make(model)
    pc.store(tokens, cache)
    stored = [np.array(c.keys) for c in cache]
    hit = pc.lookup(tokens[:200] + rand_tokens(300, 10))  # trimmed copy, then extended
    prefill(model, hit.cache, rand_tokens(300, 10))
    (entry,) = pc.ram.entries.values()
    for kept, c in zip(stored, entry.cache, strict=True):
        assert np.array_equal(np.array(c.keys), kept[..., : len(tokens), :])
    assert_close(warm_logits(model, pc.lookup(tokens), tokens), logits)


def test_store_takes_cache_length_and_keeps_working_when_caller_continues(model, base):
    tokens, _, logits = base
    cache, _ = cold(model, tokens)
    pc = make(model)
    assert pc.store(tokens + [1, 2, 3], cache)  # ids past the cache length are ignored
    prefill(model, cache, rand_tokens(20, 11))  # the caller keeps using its cache
    assert pc.list_entries()[0]["tokens"] == len(tokens)
    assert_close(warm_logits(model, pc.lookup(tokens), tokens), logits)


def test_caller_trimming_and_rewriting_its_cache_in_place_leaves_the_entry_alone(model, base):
    tokens, _, logits = base
    cache, _ = cold(model, tokens)  # 600 tokens in a 768-slot buffer: writes go in place
    pc = make(model)
    pc.store(tokens, cache)
    for c in cache:
        c.trim(100)
    prefill(model, cache, rand_tokens(100, 12))  # overwrites positions 500..599 in place
    assert_close(warm_logits(model, pc.lookup(tokens), tokens), logits)


def test_extension_replaces_its_ancestor_and_ancestor_is_not_re_added(model, base):
    tokens, cache, _ = base
    pc = make(model)
    short_cache, _ = cold(model, tokens[:300])
    pc.store(tokens[:300], short_cache)
    pc.store(tokens, cache)
    assert [e["tokens"] for e in pc.list_entries()] == [len(tokens)]
    pc.store(tokens[:300], short_cache)  # served by the longer one after trimming
    assert [e["tokens"] for e in pc.list_entries()] == [len(tokens)]


def test_ram_budget_evicts_least_recently_used(model):
    prompts = {name: rand_tokens(200, seed) for seed, name in enumerate("abc", start=20)}
    caches = {name: cold(model, t)[0] for name, t in prompts.items()}
    probe = make(model)
    probe.store(prompts["a"], caches["a"])
    one = probe.stats()["ram"]["bytes"]  # stored entries are exact-length, not step-padded
    pc = make(model, ram_bytes=int(one * 2.5))
    pc.store(prompts["a"], caches["a"])
    pc.store(prompts["b"], caches["b"])
    assert pc.lookup(prompts["a"]).cached_tokens == 199  # a is now more recent than b
    pc.store(prompts["c"], caches["c"])
    assert {e["tokens"] for e in pc.list_entries()} == {200}
    assert pc.lookup(prompts["b"]).source == "miss"
    assert pc.lookup(prompts["a"]).source == "ram" and pc.lookup(prompts["c"]).source == "ram"
    assert pc.stats()["ram"]["bytes"] <= pc.ram.budget
    assert not make(model, ram_bytes=one // 2).store(prompts["a"], caches["a"])  # too big


def test_concurrent_sessions_sharing_a_system_prompt_all_hit(model):
    system = rand_tokens(300, 30)
    pc = make(model)
    sessions = {s: system + rand_tokens(40, 31 + s) for s in range(3)}
    cache, _ = cold(model, sessions[0])
    pc.store(sessions[0], cache)
    # Sessions 1 and 2 start after session 0: they reuse the system prompt.
    for s in (1, 2):
        hit = pc.lookup(sessions[s])
        assert hit.cached_tokens == len(system)
        prefill(model, hit.cache, sessions[s][hit.cached_tokens :])
        pc.store(sessions[s], hit.cache)
    # Interleaved follow-ups: each session finds its own history.
    for s in (2, 0, 1):
        follow = sessions[s] + rand_tokens(20, 40 + s)
        hit = pc.lookup(follow)
        assert hit.cached_tokens == len(sessions[s])
        assert_close(warm_logits(model, hit, follow), cold(model, follow)[1])
    s = pc.stats()
    assert s["ram"]["entries"] == 3 and s["hits"] == 5 and s["misses"] == 0


def test_stats_and_listing_from_other_threads_while_generating(model):
    pc = make(model)
    errors, done = [], threading.Event()

    def poll():
        try:
            while not done.is_set():
                stats, rows = pc.stats(), pc.list_entries()
                assert stats["ram"]["entries"] >= 0 and isinstance(rows, list)
        except Exception as e:  # reported below
            errors.append(e)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for seed in range(6):
            tokens = rand_tokens(120, 50 + seed)
            hit = pc.lookup(tokens)
            prefill(model, hit.cache, tokens[hit.cached_tokens :])
            pc.store(tokens, hit.cache)
            if seed == 3:
                assert pc.clear("ram") > 0
    finally:
        done.set()
        poller.join()
    assert errors == []
    assert pc.stats()["ram"]["entries"] == 2


def test_prefill_seconds_saved_uses_reported_speed(model, base):
    tokens, cache, _ = base
    pc = make(model)
    pc.store(tokens, cache)
    assert pc.stats()["prefill_seconds_saved"] is None
    pc.lookup(tokens)
    pc.record_prefill(1000, 2.0)
    s = pc.stats()
    assert s["tokens_reused"] == len(tokens) - 1
    assert s["prefill_seconds_saved"] == pytest.approx((len(tokens) - 1) / 500)


def test_warm_follow_up_is_much_faster_than_cold(model):
    tokens = rand_tokens(1500, 60)
    t0 = time.perf_counter()
    cache, _ = cold(model, tokens)
    cold_s = time.perf_counter() - t0
    pc = make(model)
    pc.store(tokens, cache)
    follow = tokens + rand_tokens(30, 61)
    t0 = time.perf_counter()
    warm_logits(model, pc.lookup(follow), follow)
    assert cold_s / (time.perf_counter() - t0) >= 3


def test_store_adapter_restores_looks_up_and_flushes_on_close(model, base, tmp_path):
    from server.prefix_cache.adapter import StoreAdapter

    tokens, cache, logits = base
    first = StoreAdapter(make(model, tmp_path))
    assert first.lookup(tokens)[1] == 0
    first.store(tokens, cache)
    first.close()  # graceful stop: flushed
    second = StoreAdapter(make(model, tmp_path))
    assert second.restore() == 1  # start: restored before serving
    prompt_cache, n_cached = second.lookup(tokens)
    assert n_cached == len(tokens) - 1 and second.stats()["ram_hits"] == 1
    assert_close(prefill(model, prompt_cache, tokens[n_cached:]), logits)


def test_a_shed_writes_dirty_entries_before_it_frees_the_ram_tier(model, base, tmp_path):
    from server.prefix_cache.adapter import StoreAdapter

    tokens, cache, logits = base
    shedding = StoreAdapter(make(model, tmp_path))  # no write-behind thread: stays dirty
    shedding.store(tokens, cache)
    assert shedding.stats()["dirty_entries"] == 1
    result = shedding.shed(budget_s=30)
    assert result["written"] == 1 and result["freed_bytes"] > 0
    assert shedding.stats()["ram"]["entries"] == 0
    # What RAM alone held is on disk: the next lookup loads it from there.
    prompt_cache, n_cached = shedding.lookup(tokens)
    assert n_cached == len(tokens) - 1
    assert_close(prefill(model, prompt_cache, tokens[n_cached:]), logits)


# disk tier


def test_flush_then_restore_gives_cold_logits(model, base, tmp_path):
    tokens, cache, logits = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    assert pc.flush() == 1 and pc.flush() == 0  # nothing left to write
    disk = pc.stats()["disk"]
    assert disk["bytes_written"] > 0 and disk["bytes_written"] == disk["bytes"]
    assert disk["bytes_written_total"] == disk["bytes_written"]
    folder = tmp_path / "kv" / "m1"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"

    restarted = make(model, tmp_path)
    assert restarted.restore() == 1
    hit = restarted.lookup(tokens)
    assert (hit.cached_tokens, hit.source) == (len(tokens) - 1, "ram")
    assert_close(warm_logits(model, hit, tokens), logits)


def test_lazy_load_from_disk_on_ram_miss(model, base, tmp_path):
    tokens, cache, _ = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    pc.flush()
    restarted = make(model, tmp_path)
    other = tokens[:500] + rand_tokens(10, 70)
    hit = restarted.lookup(other)
    assert (hit.cached_tokens, hit.source) == (500, "disk")
    assert_close(warm_logits(model, hit, other), cold(model, other)[1])
    assert restarted.stats()["disk_hits"] == 1
    assert restarted.lookup(other).source == "ram"  # now resident


def test_restore_loads_most_recent_first_within_ram_budget(model, tmp_path):
    prompts = [rand_tokens(150, 90 + i) for i in range(4)]
    caches = [cold(model, p)[0] for p in prompts]
    pc = make(model, tmp_path)
    for p, c in zip(prompts[:3], caches, strict=False):
        pc.store(p, c)
        time.sleep(0.01)  # distinct last-used times
    one = pc.stats()["ram"]["bytes"] // 3
    pc.flush()
    restarted = make(model, tmp_path, ram_bytes=int(one * 2.5))
    assert restarted.restore() == 2
    resident = {e["id"] for e in restarted.list_entries() if e["tier"] == "ram"}
    assert resident == {tokens_key(as_tokens(p)) for p in prompts[1:3]}
    restarted.store(prompts[3], caches[3])  # evicts the least recently used: prompts[1]
    assert restarted.lookup(prompts[2]).source == "ram"
    assert restarted.lookup(prompts[1]).source == "disk"  # back on demand
    assert restarted.stats()["ram"]["entries"] == 2


def test_disk_budget_evicts_least_recently_used(model, tmp_path):
    prompts = [rand_tokens(150, 80 + i) for i in range(3)]
    pc = make(model, tmp_path)
    for p in prompts:
        pc.store(p, cold(model, p)[0])
        time.sleep(0.01)  # distinct last-used times
    pc.flush()
    one = max(e["bytes"] for e in disk_index.list_entries(tmp_path / "kv"))
    pc.clear("disk")
    small = make(model, tmp_path, disk_bytes=int(one * 2.5))
    for p in prompts:
        small.store(p, cold(model, p)[0])
        time.sleep(0.01)
    small.flush()  # most recent first; the oldest no longer fits
    on_disk = {e["tokens"] for e in small.list_entries() if e["tier"] == "disk"}
    assert len(small.disk.entries()) == 2 and on_disk == {150}
    restarted = make(model, tmp_path, disk_bytes=int(one * 2.5))
    assert restarted.lookup(prompts[0]).source == "miss"
    assert restarted.lookup(prompts[2]).source == "disk"


def test_failed_write_is_logged_and_leaves_nothing_behind(
    model, base, tmp_path, monkeypatch, caplog
):
    import mlx_lm.models.cache as mlx_cache

    def disk_full(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    tokens, cache, _ = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    monkeypatch.setattr(mlx_cache, "save_prompt_cache", disk_full)
    assert pc.flush() == 0
    assert "No space left" in caplog.text
    assert [p.name for p in (tmp_path / "kv" / "m1").iterdir() if p.suffix == ".safetensors"] == []
    assert pc.lookup(tokens).source == "ram"  # RAM tier unaffected
    error = pc.stats()["disk"]["error"]
    assert error["reason"].startswith("write: OSError") and "No space left" in error["reason"]
    assert len(pc.dirty()) == 1  # kept for the next try
    assert pc.write_dirty() == 0  # backing off: the disk is not touched
    monkeypatch.undo()  # space again
    assert pc.flush() == 1  # the stop tries at once, whatever the back-off
    assert pc.stats()["disk"]["error"] is None and pc.dirty() == []


def test_clear_and_prune_report_freed_bytes(model, base, tmp_path):
    tokens, cache, _ = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    pc.flush()
    ram, disk = pc.stats()["ram"]["bytes"], pc.stats()["disk"]["bytes"]
    assert pc.prune(3600) == 0
    assert pc.clear("ram") == ram
    assert pc.clear("disk") == disk
    assert pc.list_entries() == []
    pc.store(tokens, cache)
    pc.flush()
    disk = pc.stats()["disk"]["bytes"]  # a new file (its header's time may differ in length)
    assert pc.prune(-1) == ram + disk
    with pytest.raises(ValueError):
        pc.clear("gpu")


def _saved(model, base, tmp_path) -> tuple[PrefixStore, dict, object]:
    tokens, cache, _ = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    pc.flush()
    folder = tmp_path / "kv" / "m1"
    ((key, entry),) = disk_index.read_index(folder)["entries"].items()
    return pc, entry, folder / entry["file"]


def _reindex(folder, path):
    """Make the index agree with a file rewritten behind its back (size and checksum)."""
    index = disk_index.read_index(folder)
    for e in index["entries"].values():
        e["bytes"], e["sha256"] = path.stat().st_size, disk_index.sha256_file(path)
    disk_index.write_index(folder, index)


def _rewrite_metadata(path, **changes):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update({f"0.{k}": v for k, v in changes.items()})
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_corrupt_file_is_skipped_and_removed(model, base, tmp_path, caplog):
    _, entry, path = _saved(model, base, tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "checksum mismatch" in caplog.text
    assert restarted.disk.entries() == {} and not path.exists()


def test_truncated_file_is_skipped(model, base, tmp_path, caplog):
    pc, _, path = _saved(model, base, tmp_path)
    pc.clear("ram")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert pc.lookup(base[0]).source == "miss"  # truncated while the worker ran
    assert "truncated" in caplog.text
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"


def test_truncated_file_with_a_matching_index_is_skipped(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1000)
    _reindex(path.parent, path)
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "unreadable" in caplog.text


def test_foreign_model_file_is_never_loaded(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    _rewrite_metadata(path, model="someone-else")
    _reindex(path.parent, path)  # the index still claims it is ours
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "model someone-else != m1" in caplog.text
    assert path.exists()  # sound, just not ours: left for its owner


def test_other_model_folder_is_not_offered(model, base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.prefix_cache")
    _, _, path = _saved(model, base, tmp_path)
    shutil.copytree(path.parent, tmp_path / "kv" / "m2")
    other = PrefixStore(model, model_id="m2", tokenizer_id="t1", disk_root=tmp_path / "kv")
    assert other.lookup(base[0]).source == "miss"
    assert "not usable here: model m1 != m2" in caplog.text


def test_old_format_file_is_skipped(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    _rewrite_metadata(path, format="0")
    _reindex(path.parent, path)
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "format 0 != 1" in caplog.text


def test_other_tokenizer_or_mlx_lm_version_is_skipped(model, base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.prefix_cache")
    _, _, path = _saved(model, base, tmp_path)
    retokenized = PrefixStore(model, model_id="m1", tokenizer_id="t2", disk_root=tmp_path / "kv")
    assert retokenized.lookup(base[0]).source == "miss"
    _rewrite_metadata(path, mlx_lm="0.0.1")
    _reindex(path.parent, path)
    assert make(model, tmp_path).lookup(base[0]).source == "miss"
    assert "tokenizer t1 != t2" in caplog.text and "mlx_lm 0.0.1" in caplog.text


# Claude Code fixture: normalisation keeps the prefix


@pytest.fixture(scope="module")
def rendered(loaded, claude_code_requests):
    tok = loaded.tokenizer
    return [render_tokens(tok, r["body"]) for r in claude_code_requests]


def test_fixture_replay_reuses_95_percent_of_each_prompt(rendered):
    trie = TokenTrie()  # token-level replay: the prefills themselves would take minutes here
    for i, tokens in enumerate(rendered):
        match = trie.search(tokens)
        reused = max(match.prefix_len, match.shared if match.extension_value else 0)
        if i:
            assert reused / len(tokens) >= 0.95, (i, reused, len(tokens))
            assert reused == len(rendered[i - 1])  # the whole previous prompt
        trie.insert(tokens, i)


def test_billing_header_change_keeps_system_and_tools_prefix(loaded, claude_code_requests):
    tok = loaded.tokenizer
    first = claude_code_requests[0]["body"]
    second = json.loads(json.dumps(first))
    header = second["system"][0]
    assert header["text"].startswith("x-anthropic-billing-header:")
    header["text"] = header["text"].replace("cc_version=", "cc_version=9.9.9.zzz")

    messages, tools = anthropic_to_template_inputs(first)
    prefix = tok.apply_chat_template(messages[:1], tools=tools, tokenize=True)
    prefix_len = len(prefix["input_ids"] if isinstance(prefix, dict) else prefix)
    a = np.array(render_tokens(tok, first))
    b = np.array(render_tokens(tok, second))
    assert prefix_len > 5000  # the system prompt and tool schemas
    assert common_prefix_len(a, b) >= prefix_len
    # Without normalisation the header breaks the prefix within its first few tokens.
    raw_a = np.array(render_tokens(tok, first, normalized=False))
    raw_b = np.array(render_tokens(tok, second, normalized=False))
    assert common_prefix_len(raw_a, raw_b) < 50
