"""The SSE encoders on scripted event sequences (no model): grammar, and errors after the 200."""

from __future__ import annotations

import asyncio
import json

from server.api.anthropic.stream import encode as anthropic_encode
from server.api.openai.stream import encode as openai_encode
from server.request import (
    Failed,
    Finished,
    Heartbeat,
    Progress,
    Started,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tests.worker.test_stream import check_grammar


async def _aiter(items):
    for item in items:
        yield item


def run_anthropic(events) -> list[tuple[str, dict]]:
    async def go():
        return [
            chunk
            async for chunk in anthropic_encode(
                _aiter(events), message_id="msg_1", model="m", on_finish=lambda f: None
            )
        ]

    out = []
    for chunk in asyncio.run(go()):
        head, data = chunk.strip().split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def run_openai(events) -> list:
    async def go():
        return [
            chunk
            async for chunk in openai_encode(
                _aiter(events),
                completion_id="c",
                model="m",
                include_usage=True,
                on_finish=lambda f: None,
            )
        ]

    return [c for c in asyncio.run(go()) if c.startswith("data: ")]


CALL = ToolCall(id="call_abc", name="f", arguments={"x": 1})


def test_anthropic_grammar_with_pings_text_and_tools():
    events = run_anthropic(
        [
            Heartbeat(),
            Started(10, 4),
            Progress(5, 10),
            Heartbeat(),
            TextDelta("a"),
            TextDelta("b"),
            ToolCallDelta(CALL),
            TextDelta("c"),
            Finished("tool_calls", Usage(10, 4, 3)),
        ]
    )
    # A queued stream pings before message_start (its usage needs the cache lookup); the
    # SDKs skip pings wherever they come. Progress only ever follows message_start.
    assert [n for n, _ in events[:2]] == ["ping", "message_start"]
    assert events[1][1]["message"]["usage"] == {
        "input_tokens": 6,
        "output_tokens": 0,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }
    assert [n for n, _ in events].count("ping") == 4
    delta = check_grammar(events)
    assert delta["delta"]["stop_reason"] == "tool_use"
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use", "text"]
    assert starts[1]["id"] == "toolu_abc" and starts[1]["input"] == {}
    partial = [
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert [json.loads(p) for p in partial] == [{"x": 1}]


def test_anthropic_failure_after_200_ends_with_error_event():
    events = run_anthropic([Started(3, 0), TextDelta("a"), Failed(RuntimeError("secret"))])
    name, data = events[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal server error"},
    }


def test_openai_failure_after_200_ends_with_error_chunk():
    chunks = run_openai([Started(3, 0), TextDelta("a"), Failed(RuntimeError("secret"))])
    last = json.loads(chunks[-2].removeprefix("data: "))
    assert last["error"]["type"] == "server_error" and "secret" not in chunks[-2]
    assert chunks[-1].strip() == "data: [DONE]"


def test_openai_tool_call_deltas_and_usage():
    chunks = run_openai(
        [Started(3, 1), ToolCallDelta(CALL), Finished("tool_calls", Usage(3, 1, 2))]
    )
    bodies = [json.loads(c.removeprefix("data: ")) for c in chunks[:-1]]
    assert chunks[-1] == "data: [DONE]\n\n"
    calls = [
        b["choices"][0]["delta"]["tool_calls"][0]
        for b in bodies
        if b["choices"] and "tool_calls" in b["choices"][0]["delta"]
    ]
    assert calls[0]["id"] == "call_abc" and calls[0]["function"]["name"] == "f"
    assert "id" not in calls[1] and "name" not in calls[1]["function"]
    assert bodies[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert bodies[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 1}
