"""Text that cannot be encoded (a lone UTF-16 surrogate, as a JSON escape) is replaced with
U+FFFD, as the SDKs do, on every endpoint: never a 500, and never a conversation that fails
every later turn because its history holds one."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures_worker import API_KEY

HEADERS = {"x-api-key": API_KEY, "content-type": "application/json"}
LONE = "\ud800"  # json.dumps writes it as the escape "\ud800": valid JSON, not valid Unicode


def _raw(body: dict) -> bytes:
    # ensure_ascii: the lone surrogate travels as its JSON escape, as a buggy client sends it.
    return json.dumps(body, ensure_ascii=True).encode()


def _post(worker, path: str, body: dict) -> httpx.Response:
    return httpx.post(worker.base_url + path, content=_raw(body), headers=HEADERS, timeout=60)


def _anthropic_history(text: str) -> dict:
    """A conversation with `text` in the system prompt, a tool call's input, its result and the
    new user turn: every place a Claude Code session carries text it was given."""
    return {
        "model": "claude-x",
        "max_tokens": 4,
        "system": [{"type": "text", "text": f"You help. {text}"}],
        "tools": [{"name": "read", "description": f"Read {text}", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": f"Open it {text}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Reading {text}"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"p": text}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"bytes {text}"},
                    {"type": "text", "text": f"And now? {text}"},
                ],
            },
        ],
    }


def _openai_history(text: str) -> dict:
    return {
        "model": "claude-x",
        "max_tokens": 4,
        "messages": [
            {"role": "system", "content": f"You help. {text}"},
            {"role": "user", "content": f"Open it {text}"},
            {
                "role": "assistant",
                "content": f"Reading {text}",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": json.dumps({"p": text})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"bytes {text}"},
            {"role": "user", "content": f"And now? {text}"},
        ],
    }


def test_count_tokens_counts_a_lone_surrogate_as_the_replacement_character(worker):
    counted = _post(worker, "/v1/messages/count_tokens", _anthropic_history(LONE))
    assert counted.status_code == 200, counted.text
    replaced = _post(worker, "/v1/messages/count_tokens", _anthropic_history("\ufffd"))
    assert counted.json()["input_tokens"] == replaced.json()["input_tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_with_lone_surrogates_everywhere_are_served(worker, stream):
    r = _post(worker, "/v1/messages", {**_anthropic_history(LONE), "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        events = [line for line in r.text.splitlines() if line.startswith("event:")]
        assert events[-1] == "event: message_stop" and "event: error" not in events
    else:
        body = r.json()
        assert body["type"] == "message" and body["stop_reason"] in ("end_turn", "max_tokens")
        # The replacement character costs what the surrogate's place costs: same prompt length.
        plain = _post(worker, "/v1/messages", _anthropic_history("\ufffd")).json()
        assert body["usage"]["input_tokens"] == plain["usage"]["input_tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_with_lone_surrogates_everywhere_is_served(worker, stream):
    r = _post(worker, "/v1/chat/completions", {**_openai_history(LONE), "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")
        assert '"error"' not in r.text
    else:
        body = r.json()
        plain = _post(worker, "/v1/chat/completions", _openai_history("\ufffd")).json()
        assert body["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def _responses_history(text: str) -> dict:
    return {
        "model": "claude-x",
        "max_output_tokens": 4,
        "instructions": f"You help. {text}",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": f"Open it {text}"}]},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": '{"p": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": f"bytes {text}"},
            {"role": "user", "content": f"And now? {text}"},
        ],
        "tools": [{"type": "function", "name": "read", "description": f"Read {text}"}],
    }


def test_responses_with_lone_surrogates_everywhere_are_served(worker):
    r = _post(worker, "/v1/responses", _responses_history(LONE))
    assert r.status_code == 200, r.text
    plain = _post(worker, "/v1/responses", _responses_history("\ufffd")).json()
    assert r.json()["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
