"""The prefix KV cache in a real worker: reuse reported honestly, restarts, corruption, admin.

Real `python -m server` subprocesses on the tiny 32K-context model, real SDK clients.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from server.prefix_cache import disk_index
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker

MODEL = "claude-sonnet-4-5"
AUTH = {"authorization": f"Bearer {API_KEY}"}
WORDS = [
    "cache",
    "prefix",
    "token",
    "model",
    "worker",
    "stream",
    "prompt",
    "reply",
    "tool",
    "server",
    "config",
    "state",
]


def long_text(n_words: int, seed: int) -> str:
    """Deterministic filler text; a different seed gives a prompt that shares no prefix."""
    return " ".join(WORDS[(i * 7 + seed * 13 + i // 5) % len(WORDS)] for i in range(n_words))


def openai_client(handle):
    from openai import OpenAI

    return OpenAI(base_url=handle.base_url + "/v1", api_key=API_KEY, max_retries=0)


def anthropic_client(handle):
    from anthropic import Anthropic

    return Anthropic(base_url=handle.base_url, api_key=API_KEY, max_retries=0)


def clear(handle, tier: str = "both") -> dict:
    r = httpx.delete(handle.base_url + "/v1/cache", params={"tier": tier}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_log(handle, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = handle.log()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the worker log:\n{handle.log()}")


@pytest.fixture(scope="module")
def kv_worker(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("kv")
    handle = start_worker(
        tiny_model(), "--cache-dir", str(cache_dir), "--max-output-tokens", "16", api_key=API_KEY
    )
    yield handle
    handle.stop()


def test_anthropic_follow_up_reports_cached_tokens_and_honest_usage(kv_worker):
    client = anthropic_client(kv_worker)
    clear(kv_worker)
    system = long_text(600, seed=1)
    messages = [{"role": "user", "content": "List the files."}]
    first = client.messages.create(model=MODEL, system=system, messages=messages, max_tokens=8)
    true_first = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    u = first.usage
    assert u.cache_read_input_tokens == 0
    assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == (
        true_first.input_tokens
    )

    messages += [
        {"role": "assistant", "content": first.content or "Done."},
        {"role": "user", "content": "Now read the first one."},
    ]
    second = client.messages.create(model=MODEL, system=system, messages=messages, max_tokens=8)
    true_second = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    u = second.usage
    # Everything up to the previous reply's generation prompt came from the cache.
    assert u.cache_read_input_tokens >= true_first.input_tokens - 1
    assert u.input_tokens > 0
    assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == (
        true_second.input_tokens
    )


def test_openai_follow_up_reports_cached_tokens(kv_worker):
    client = openai_client(kv_worker)
    clear(kv_worker)
    messages = [
        {"role": "system", "content": long_text(600, seed=2)},
        {"role": "user", "content": "Summarise the notes."},
    ]
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content or "Done."},
        {"role": "user", "content": "Shorter, please."},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens - 1 <= cached < second.usage.prompt_tokens
    # The prompt length reported with a hit is the true one: the same as a cold run's.
    clear(kv_worker)
    cold = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert cold.usage.prompt_tokens == second.usage.prompt_tokens


def test_the_same_prompt_twice_hits(kv_worker):
    # The release smoke check: a ~1K-token chat prompt sent twice reports cached tokens.
    client = openai_client(kv_worker)
    messages = [{"role": "user", "content": long_text(700, seed=3)}]
    replies = [
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
        for _ in range(2)
    ]
    assert (
        replies[1].usage.prompt_tokens_details.cached_tokens == replies[0].usage.prompt_tokens - 1
    )


def test_concurrent_conversations_sharing_a_system_prompt_both_hit(kv_worker):
    client = anthropic_client(kv_worker)
    clear(kv_worker)
    system = long_text(800, seed=4)

    def ask(question: str):
        return client.messages.create(
            model=MODEL,
            system=system,
            messages=[{"role": "user", "content": question}],
            max_tokens=4,
        ).usage

    shared = client.messages.count_tokens(
        model=MODEL, system=system, messages=[{"role": "user", "content": "x"}]
    ).input_tokens
    ask("Which files changed?")  # the first one in pays for the system prompt
    with ThreadPoolExecutor(2) as pool:
        usages = list(pool.map(ask, ["What broke the build?", "Where are the tests?"]))
    for usage in usages:
        assert usage.cache_read_input_tokens >= shared - 20  # all but the user turn


def test_admin_endpoints_list_and_clear(kv_worker):
    client = openai_client(kv_worker)
    clear(kv_worker)
    messages = [{"role": "user", "content": long_text(300, seed=5)}]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)

    listing = httpx.get(kv_worker.base_url + "/v1/cache", headers=AUTH).json()
    ram = [e for e in listing["entries"] if e["tier"] == "ram"]
    assert len(ram) == 1
    assert {"tier", "id", "tokens", "bytes", "created", "last_used", "model"} <= set(ram[0])
    assert ram[0]["tokens"] > 300 and ram[0]["bytes"] > 0
    status = httpx.get(kv_worker.base_url + "/v1/status", headers=AUTH).json()["cache"]
    assert status["ram"]["entries"] == 1 and status["ram"]["bytes"] == ram[0]["bytes"]
    assert {"hit_rate", "tokens_reused", "prefill_seconds_saved"} <= set(status)
    assert "bytes_written" in status["disk"]
    metrics = httpx.get(kv_worker.base_url + "/metrics", headers=AUTH).text
    assert f"mlxctl_cache_ram_bytes {ram[0]['bytes']}" in metrics
    assert "mlxctl_cache_disk_bytes_written " in metrics

    # Same auth as every route; a bad tier is a 400 in the OpenAI error shape.
    assert httpx.get(kv_worker.base_url + "/v1/cache").status_code == 401
    assert httpx.delete(kv_worker.base_url + "/v1/cache").status_code == 401
    bad = httpx.delete(kv_worker.base_url + "/v1/cache", params={"tier": "tape"}, headers=AUTH)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"

    freed = clear(kv_worker, "both")
    assert freed["freed_bytes"] >= ram[0]["bytes"]
    assert httpx.get(kv_worker.base_url + "/v1/cache", headers=AUTH).json()["entries"] == []
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens == 0


def test_warm_follow_up_is_much_faster_than_cold(kv_worker):
    client = openai_client(kv_worker)
    clear(kv_worker)
    messages = [
        {"role": "system", "content": long_text(3000, seed=6)},
        {"role": "user", "content": "Go."},
    ]

    def timed(msgs):
        started = time.perf_counter()
        reply = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
        return time.perf_counter() - started, reply

    cold, reply = timed(messages)
    assert reply.usage.prompt_tokens > 2500
    follow = [
        *messages,
        {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": "On."},
    ]
    warm, reply = timed(follow)
    assert reply.usage.prompt_tokens_details.cached_tokens > 2500
    assert cold >= 3 * warm, f"cold {cold:.3f}s, warm {warm:.3f}s"


def _stored_prompt(handle) -> tuple[list[dict], int]:
    client = openai_client(handle)
    messages = [
        {"role": "system", "content": long_text(900, seed=7)},
        {"role": "user", "content": "Start."},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    return messages, reply.usage.prompt_tokens


def test_restart_restores_the_cache_from_disk(tmp_path):
    cache_dir = str(tmp_path / "kv")
    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        messages, prompt_tokens = _stored_prompt(handle)
    finally:
        assert handle.stop() == 0
    (entry,) = disk_index.list_entries(cache_dir)  # written behind or on stop
    assert oct(os.stat(cache_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(entry["path"]).st_mode & 0o777) == "0o600"

    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        assert "disk index of 1 entries" in handle.log()  # lazy: ready before any tensor loads
        wait_for_log(handle, "prefetched 1 entries")  # then loaded in the background
        messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": "Go."}]
        reply = openai_client(handle).chat.completions.create(
            model=MODEL, messages=messages, max_tokens=2
        )
        assert reply.usage.prompt_tokens_details.cached_tokens >= prompt_tokens - 1
        stats = httpx.get(handle.base_url + "/v1/status", headers=AUTH).json()["cache"]
        # Two RAM hits: the replay of the last request before ready (server.engine.replay), then
        # this one; neither went to the disk.
        assert (stats["ram_hits"], stats["disk_hits"]) == (2, 0)
        assert stats["restore"]["mode"] == "lazy" and stats["restore"]["entries"] == 1
    finally:
        handle.stop()


def test_a_corrupt_cache_file_is_skipped_and_the_worker_serves(tmp_path):
    cache_dir = tmp_path / "kv"
    handle = start_worker(tiny_model(), "--cache-dir", str(cache_dir), api_key=API_KEY)
    try:
        messages, _ = _stored_prompt(handle)
    finally:
        handle.stop()
    (entry,) = [p for p in cache_dir.rglob("*.safetensors")]
    data = bytearray(entry.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # same size, wrong checksum
    entry.write_bytes(bytes(data))

    handle = start_worker(tiny_model(), "--cache-dir", str(cache_dir), api_key=API_KEY)
    try:
        reply = openai_client(handle).chat.completions.create(
            model=MODEL, messages=messages, max_tokens=2
        )
        assert reply.usage.prompt_tokens_details.cached_tokens == 0
        log = wait_for_log(handle, "skipped")
        assert entry.name in log and "checksum mismatch" in log
        assert reply.choices[0].finish_reason in ("stop", "length")
    finally:
        handle.stop()


def test_warm_prompts_are_prefilled_before_ready(tmp_path):
    system = long_text(700, seed=8)
    body = {
        "system": [{"type": "text", "text": system}],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    (tmp_path / "agent.json").write_text(json.dumps(body))
    (tmp_path / "notes.txt").write_text(long_text(400, seed=9))
    (tmp_path / "broken.json").write_text('{"messages": 3}')
    files = os.pathsep.join(str(tmp_path / n) for n in ("agent.json", "broken.json"))
    handle = start_worker(
        tiny_model(),
        "--cache-dir",
        str(tmp_path / "kv"),
        "--warm-prompt",
        str(tmp_path / "notes.txt"),
        env={**os.environ, "MLXCTL_WARM_PROMPTS": files},  # the flag wins over the variable
        api_key=API_KEY,
    )
    try:
        log = handle.log()
        assert "warm prompt" in log and "notes.txt" in log and "agent.json" not in log
    finally:
        handle.stop()

    handle = start_worker(
        tiny_model(),
        "--cache-disk-bytes",
        "0",  # RAM only: the hit below comes from the warm-up, not from disk
        env={**os.environ, "MLXCTL_WARM_PROMPTS": files},
        api_key=API_KEY,
    )
    try:
        log = handle.log()
        assert "broken.json skipped" in log
        usage = (
            anthropic_client(handle)
            .messages.create(
                model=MODEL,
                system=system,
                messages=[{"role": "user", "content": "What now?"}],
                max_tokens=2,
            )
            .usage
        )
        assert usage.cache_read_input_tokens > 700
    finally:
        handle.stop()


def test_claude_code_session_reuses_almost_every_prompt_token(tmp_path, claude_code_requests):
    # One layer keeps the cold ~27K-token first prefill short; the rest must come from the cache.
    handle = start_worker(
        tiny_model(layers=1), "--cache-dir", str(tmp_path / "kv"), api_key=API_KEY, timeout=300
    )
    try:
        for i, captured in enumerate(claude_code_requests):
            body = {**captured["body"], "stream": False, "max_tokens": 4, "temperature": 0}
            r = httpx.post(
                handle.base_url + "/v1/messages",
                json=body,
                headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"},
                timeout=300,
            )
            assert r.status_code == 200, r.text
            u = r.json()["usage"]
            total = u["input_tokens"] + u["cache_read_input_tokens"]
            total += u["cache_creation_input_tokens"]
            if i > 0:
                assert u["cache_read_input_tokens"] >= 0.95 * total, (i, u)
    finally:
        handle.stop()


def test_piecewise_tokenization_equals_plain_and_falls_back():
    from pathlib import Path

    from mlx_lm.utils import load_tokenizer

    from server.prompt.segments import CHECKS, SegmentEncoder

    tokenizer = load_tokenizer(Path(tiny_model()))
    encoder = SegmentEncoder(tokenizer)
    turns = [f"<|im_start|>user\n{long_text(200, seed=i)}<|im_end|>\n" for i in range(CHECKS + 2)]
    for n in range(1, len(turns) + 1):
        text = "".join(turns[:n]) + "<|im_start|>assistant\n"
        assert encoder.encode(text) == list(tokenizer.encode(text, add_special_tokens=False))
    assert encoder.enabled

    class Counting:
        # Encodes a piece differently from the whole text: the encoder must notice.
        def __init__(self):
            self._tokenizer = tokenizer._tokenizer

        def encode(self, text, add_special_tokens=False):
            return [len(text)]

    odd = SegmentEncoder(Counting())
    assert odd.encode("<|im_start|>hi<|im_end|>") == [len("<|im_start|>hi<|im_end|>")]
    assert not odd.enabled


def test_a_prefill_cut_short_is_resumed_by_the_same_request_sent_again(tmp_path):
    step = 128
    handle = start_worker(
        tiny_model(),
        "--cache-disk-bytes",
        "0",
        "--prefill-step-size",
        str(step),
        "--max-output-tokens",
        "4",
        api_key=API_KEY,
    )
    body = {
        "model": MODEL,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": long_text(9000, seed=31)}],
    }
    try:
        headers = {**AUTH, "anthropic-version": "2023-06-01"}
        with httpx.stream(
            "POST", handle.base_url + "/v1/messages", json={**body, "stream": True}, headers=headers
        ) as r:
            for line in r.iter_lines():
                if line == "event: ping":  # prefill progress: the first chunks are in
                    break
        # Queued behind the cancelled one: it runs once that prefill has stopped.
        usage = anthropic_client(handle).messages.create(**body).usage
        prompt = usage.input_tokens + usage.cache_read_input_tokens
        # Resumed from the chunk where the first request stopped, not from scratch or the end.
        assert 0 < usage.cache_read_input_tokens < prompt - step
        assert usage.cache_read_input_tokens % step == 0
    finally:
        handle.stop()


def test_shed_writes_the_ram_tier_to_disk_then_frees_it(kv_worker):
    client = openai_client(kv_worker)
    clear(kv_worker)
    messages = [{"role": "user", "content": long_text(300, seed=6)}]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    url = kv_worker.base_url + "/v1/cache/shed"
    assert httpx.post(url).status_code == 401
    bad = httpx.post(url, params={"budget_s": "-1"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"

    shed = httpx.post(url, params={"budget_s": "30"}, headers=AUTH, timeout=60).json()
    assert shed["freed_bytes"] > 0 and shed["stats"]["ram"]["entries"] == 0
    on_disk = httpx.get(kv_worker.base_url + "/v1/cache", headers=AUTH).json()["entries"]
    assert [e["tier"] for e in on_disk] == ["disk"] * len(on_disk) and on_disk
    # Nothing RAM alone held was lost: the same prompt is served from the disk tier.
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens > 250
