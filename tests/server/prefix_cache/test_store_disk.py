"""The prefix KV cache's disk tier with real MLX caches of the tiny model: flush and restore,
lazy loads, the disk budget, a failed write, a shed, clear and prune."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.prefix_cache import disk_index
from server.prefix_cache.entry_format import tokens_key
from server.prefix_cache.trie import as_tokens
from tests.server.prefix_cache.store_helpers import (
    assert_close,
    cold,
    make,
    prefill,
    rand_tokens,
    warm_logits,
)


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
