"""Streams under real traffic: Claude Code's captured requests replayed, disconnects mid-stream."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import sse_events

HOP_BY_HOP = {"content-length", "accept-encoding", "connection", "host", "transfer-encoding"}


@pytest.fixture(scope="module")
def long_context_worker():
    """A one-layer tiny model: a 28K-token prefill costs little (the KV of layer 0 needs no
    attention), so Claude Code's ~28K-token requests replay in seconds."""
    from tests.conftest import tiny_model

    handle = start_worker(tiny_model(layers=1), "--max-output-tokens", "256")
    yield handle
    assert handle.stop() == 0


def check_grammar(events: list) -> dict:
    """Assert the Anthropic stream grammar; return the message_delta payload."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start", names
    assert names[-2:] == ["message_delta", "message_stop"], names
    assert names.count("message_delta") == 1
    open_index, next_index = None, 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert data["index"] == open_index
            if name == "content_block_stop":
                open_index = None
        elif name == "message_delta":
            assert open_index is None
    return next(data for name, data in events if name == "message_delta")


def test_claude_code_requests_replayed(long_context_worker, claude_code_requests):
    assert len(claude_code_requests) == 5
    url = long_context_worker.base_url
    for captured in claude_code_requests:
        headers = {k: v for k, v in captured["headers"].items() if k.lower() not in HOP_BY_HOP}
        counted = httpx.post(
            url + "/v1/messages/count_tokens?beta=true",
            headers=headers,
            json=captured["body"],
            timeout=60,
        )
        assert counted.status_code == 200, counted.text
        with httpx.stream(
            captured["method"],
            url + captured["path"],
            headers=headers,
            json=captured["body"],
            timeout=120,
        ) as r:
            if r.status_code == 400:  # a model too small for the prompt: a clean 400
                r.read()
                assert r.json()["error"]["type"] == "invalid_request_error"
                assert "prompt is too long" in r.json()["error"]["message"]
                continue
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
        delta = check_grammar(events)
        start = events[0][1]["message"]
        assert start["model"] == captured["body"]["model"]
        # With the prefix cache on, a follow-up's prompt is mostly read from the cache.
        usage = start["usage"]
        prompt = sum(usage[k] for k in ("input_tokens", "cache_read_input_tokens"))
        prompt += usage["cache_creation_input_tokens"]
        assert prompt == counted.json()["input_tokens"] > 20_000
        assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
        assert delta["usage"]["output_tokens"] >= 1


def status(worker) -> dict:
    headers = {"x-api-key": worker.api_key} if worker.api_key else {}
    return httpx.get(worker.base_url + "/v1/status", headers=headers).json()


def test_disconnect_mid_decode_then_next_request(long_context_worker):
    url = long_context_worker.base_url
    before = status(long_context_worker)["requests"]["cancelled"]
    body = {
        "model": "claude-x",
        "max_tokens": 256,
        "stream": True,
        "temperature": 1.0,
        # A 16K-token context makes each decode step slow enough that the reply is
        # still being written when the client leaves, however loaded the machine is.
        "messages": [{"role": "user", "content": "Write a long story." + " hello" * 8_000}],
    }
    with httpx.stream("POST", url + "/v1/messages", json=body, timeout=60) as r:
        assert r.status_code == 200
        deltas = 0
        for line in r.iter_lines():
            deltas += line.startswith("event: content_block_delta")
            if deltas == 3:
                break  # leave mid-stream: closing the connection must stop generation
    r = httpx.post(
        url + "/v1/messages",
        timeout=60,
        json={
            "model": "claude-x",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    assert r.status_code == 200 and r.json()["usage"]["output_tokens"] >= 1
    assert status(long_context_worker)["requests"]["cancelled"] == before + 1


def test_disconnect_during_prefill_pings_then_frees_worker(worker):
    """A long prefill sends pings after message_start; leaving then stops it at once."""
    before = status(worker)["requests"]["cancelled"]
    long = " hello" * 9000
    body = {
        "model": "claude-x",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": long}],
    }
    headers = {"x-api-key": API_KEY}
    seen = []
    with httpx.stream(
        "POST", worker.base_url + "/v1/messages", json=body, headers=headers, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
            if seen[-2:] == ["ping", "ping"]:
                break  # message_start's ping, then a prefill-progress ping: prefill is running
    assert seen[0] == "message_start" and "content_block_start" not in seen
    started = time.monotonic()
    r = httpx.post(
        worker.base_url + "/v1/messages",
        headers=headers,
        timeout=60,
        json={
            "model": "claude-x",
            "max_tokens": 64,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    )
    assert r.json()["content"][0]["text"] == "Hello! How can I help you today?"
    assert status(worker)["requests"]["cancelled"] == before + 1
    assert time.monotonic() - started < 30
