"""The Responses SSE encoder on scripted event sequences (no model), parsed with the SDK's types."""

from __future__ import annotations

import asyncio
import json

from server.api.responses.protocol import ResponsesRequest, convert
from server.api.responses.reply import Frame
from server.api.responses.stream import encode
from server.errors import Overloaded
from server.request import (
    Failed,
    Finished,
    Heartbeat,
    Progress,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallArgs,
    ToolCallBegin,
    ToolCallDelta,
    Usage,
)
from tests.worker.test_responses import EVENTS, check_grammar

TOOLS = [
    {"type": "function", "name": "get", "parameters": {"type": "object", "properties": {}}},
    {"type": "custom", "name": "patch"},
]
USAGE = Usage(prompt_tokens=40, cached_tokens=32, completion_tokens=9, reasoning_tokens=3)


def run(events, tools: list | None = None) -> tuple[list[tuple[str, dict]], list[str]]:
    """(event, data) of each SSE event, and any SSE comments."""
    body = ResponsesRequest(model="m", input="hi", tools=tools or TOOLS, instructions="Be brief.")
    frame = Frame(body, convert(body)[1])

    async def go():
        async def source():
            for event in events:
                yield event

        return [chunk async for chunk in encode(source(), frame=frame, on_finish=lambda f: None)]

    parsed, comments = [], []
    for chunk in asyncio.run(go()):
        for block in chunk.split("\n\n"):
            if block.startswith(":"):
                comments.append(block + "\n\n")
            elif block:
                head, data = block.split("\n")
                parsed.append(
                    (head.removeprefix("event: "), json.loads(data.removeprefix("data: ")))
                )
    return parsed, comments


def test_reasoning_text_and_calls_in_order_with_usage():
    events, comments = run(
        [
            Heartbeat(),
            Started(40, 32),
            Progress(10, 40),
            ThinkingDelta("Let me "),
            ThinkingDelta("see."),
            TextDelta("Sure."),
            ToolCallBegin("call_a", "get"),
            ToolCallArgs('{"x": '),
            ToolCallArgs("1}"),
            ToolCallDelta(ToolCall("call_a", "get", {"x": 1})),
            ToolCallDelta(ToolCall("call_b", "patch", {"input": "*** Begin Patch"})),
            Finished("tool_calls", USAGE),
        ]
    )
    # The heartbeat is a real event (Codex's idle timer ignores comments): a stub of the response.
    assert comments == []
    types = [data["type"] for _, data in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.in_progress"]
    final = check_grammar(events)
    kinds = [item.type for item in final.output]
    assert kinds == ["reasoning", "message", "function_call", "custom_tool_call"]
    reasoning, message, call, custom = final.output
    assert reasoning.summary[0].text == "Let me see."
    assert message.content[0].text == "Sure."
    assert call.arguments == '{"x": 1}' and call.call_id == "call_a"
    assert custom.input == "*** Begin Patch" and custom.name == "patch"
    assert "response.reasoning_summary_text.delta" in types
    assert "response.custom_tool_call_input.done" in types
    assert final.usage.input_tokens_details.cached_tokens == 32
    assert final.usage.output_tokens_details.reasoning_tokens == 3


def test_a_cut_reply_ends_incomplete():
    events, _ = run([TextDelta("Hel"), Finished("length", USAGE)])
    final = check_grammar(events)
    assert events[-1][0] == "response.incomplete"
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"


def test_a_failure_after_the_200_is_an_error_event_then_response_failed():
    events, _ = run([TextDelta("Hel"), Failed(Overloaded("the queue is full"))])
    parsed = [EVENTS.validate_python(data) for _, data in events]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    error, failed = parsed[-2:]
    assert error.type == "error" and error.message == "the queue is full"
    assert error.code == "rate_limit_exceeded"
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.message == "the queue is full"


def test_a_keep_alive_stays_small_whatever_the_echo_and_the_sdk_stream_takes_it():
    from openai import omit
    from openai.lib.streaming.responses._responses import ResponseStreamState

    # Codex-sized tools (~30 KB of schemas): echoed in created and the final event, not in a
    # keep-alive sent every second while the prompt prefills.
    big = [
        {"type": "function", "name": f"tool_{i}", "description": "x" * 3000, "parameters": {}}
        for i in range(10)
    ]
    script = [Heartbeat(), TextDelta("Hi"), Heartbeat(), Heartbeat(), Finished("stop", USAGE)]
    events, _ = run(script, tools=big)
    keep_alives = [data for _, data in events[2:] if data["type"] == "response.in_progress"]
    assert len(keep_alives) == 3
    assert all(len(json.dumps(k)) < 600 for k in keep_alives)
    assert len(json.dumps(events[0][1])) > 30_000  # response.created carries the whole echo
    final = check_grammar(events)
    # The SDK's own stream state (what `client.responses.stream` runs) takes every event and
    # ends with the whole response: the keep-alives' empty output replaces nothing.
    state: ResponseStreamState = ResponseStreamState(input_tools=omit, text_format=omit)
    for _, data in events:
        state.handle_event(EVENTS.validate_python(data))
    completed = state._completed_response
    assert completed is not None and completed.output_text == "Hi"
    assert [item.id for item in completed.output] == [item.id for item in final.output]
    assert len(completed.tools) == 10
