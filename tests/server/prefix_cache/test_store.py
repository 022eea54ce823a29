"""The prefix KV cache with real MLX caches of the tiny model: RAM-tier hits, trims, eviction,
and the Claude Code fixture's reuse (the disk tier: test_store_disk.py, test_store_damaged.py)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from server.prefix_cache.trie import TokenTrie, common_prefix_len
from tests.chat_inputs import anthropic_to_template_inputs, render_tokens
from tests.server.prefix_cache.store_helpers import (
    assert_close,
    cold,
    make,
    prefill,
    rand_tokens,
    warm_logits,
)

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
