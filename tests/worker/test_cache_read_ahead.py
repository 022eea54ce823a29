"""A restart reads the newest disk entries while the model loads: a real worker, a few turns, a
stop, a restart whose load is slow (test hook), and the next turn served from what was read.
Before it says ready it replays the newest request it kept, so that turn pays no first use."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import long_text, openai_client

MODEL = "claude-sonnet-4-5"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _ask(handle, messages: list[dict]):
    client = openai_client(handle).with_options(timeout=60)
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)


def test_a_restart_reads_the_newest_entries_while_the_model_loads(tmp_path):
    cache_dir = str(tmp_path / "kv")
    messages = [
        {"role": "system", "content": long_text(600, seed=23)},
        {"role": "user", "content": "Start."},
    ]
    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        for turn in ("Go on.", "And then?"):
            last = _ask(handle, messages)
            messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": turn}]
    finally:
        assert handle.stop() == 0  # the stop writes the conversation to disk
    kept = json.loads((tmp_path / "kv" / "last-request.json").read_text())
    assert kept["messages"][-1]["content"] == "Go on."  # the newest request, as it was sent

    # Test hook: a load that takes seconds, as a large model's does.
    env = {"MLXCTL_TEST_SLOW_LOAD_S": "3"}
    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY, env=env)
    try:
        resumed = _ask(handle, messages)
        status = httpx.get(handle.base_url + "/v1/status", headers=AUTH).json()["cache"]
    finally:
        handle.stop()
    log = handle.log()
    read = re.search(r"read ahead (\d+) entries .* while the model loaded", log)
    assert read is not None and int(read.group(1)) >= 1, log
    assert read.start() < log.index("model loaded:")  # read during the load, not after it
    ahead = status["disk"]["read_ahead"]
    assert ahead["entries"] >= 1 and ahead["used"] >= 1 and ahead["held_bytes"] == 0, ahead
    assert resumed.usage.prompt_tokens_details.cached_tokens >= last.usage.prompt_tokens - 1
    assert "first lookup after ready took" in log
    # The newest entry went into RAM before the worker said ready (a pass of its own), the rest
    # after: the first turn never waits for the disk.
    assert re.findall(r"prefetched (\d+) entries", log) == ["1", "0"], log
    # The kept request ran once before ready, on the restored entry: only the tokens the cache
    # can run again (64 at most), never a cold prefill; the turn after it got its full reuse.
    replayed = re.search(r"replayed \S+last-request.json \((\d+) tokens, (\d+) run\)", log)
    # (no ", stored": the graceful stop wrote the newest entry, so nothing new was computed)
    assert replayed is not None, log
    assert 1 <= int(replayed.group(2)) <= 64
    assert replayed.start() < log.index("POST /v1/chat/completions")


def test_after_a_crash_the_replay_stores_the_turn_the_disk_missed(tmp_path):
    cache_dir = str(tmp_path / "kv")
    messages = [
        {"role": "system", "content": long_text(600, seed=29)},
        {"role": "user", "content": "Start."},
    ]
    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        _ask(handle, messages)
        time.sleep(4)  # the write-behind (2 s) writes this turn's entry
        messages += [
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": "Go on. " * 80},
        ]
        newest = _ask(handle, messages)  # its entry never reaches the disk: a crash comes first
        kept = tmp_path / "kv" / "last-request.json"
        for _ in range(200):  # kept once it finished, written off the event loop
            if kept.exists() and "Go on." in kept.read_text():
                break
            time.sleep(0.01)
        handle.process.kill()
        handle.process.wait(10)
    finally:
        handle.stop()
    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": "Next."}]
        resumed = _ask(handle, messages)
    finally:
        handle.stop()
    log = handle.log()
    replayed = re.search(r"replayed \S+ \((\d+) tokens, (\d+) run, stored\)", log)
    assert replayed is not None, log
    assert int(replayed.group(1)) == newest.usage.prompt_tokens
    # The next turn starts where the lost turn's prompt ended, not where the disk's entry did.
    assert resumed.usage.prompt_tokens_details.cached_tokens >= newest.usage.prompt_tokens - 1


def test_a_cache_clear_takes_the_kept_request_with_it(tmp_path):
    cache_dir = tmp_path / "kv"
    handle = start_worker(tiny_model(), "--cache-dir", str(cache_dir), api_key=API_KEY)
    try:
        _ask(handle, [{"role": "user", "content": "Hello."}])
        kept = cache_dir / "last-request.json"
        for _ in range(100):  # written off the event loop
            if kept.exists():
                break
            time.sleep(0.05)
        assert kept.exists()
        cleared = httpx.delete(handle.base_url + "/v1/cache?tier=ram", headers=AUTH)
        assert cleared.status_code == 200 and kept.exists()  # the RAM tier only: kept
        cleared = httpx.delete(handle.base_url + "/v1/cache?tier=both", headers=AUTH)
        assert cleared.status_code == 200 and not kept.exists()
    finally:
        handle.stop()
