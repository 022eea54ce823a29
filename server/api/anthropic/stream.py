"""Anthropic SSE encoder: message_start, contiguous content blocks, message_delta, message_stop.

After the 200 has gone out a failure ends the stream with `event: error`; it never just stops.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from server.api.anthropic.protocol import STOP_REASONS, error_body
from server.api.anthropic.reply import tool_use_id, usage_dict
from server.api.anthropic.thinking_stream import ThinkingBlocks
from server.errors import InternalError, WorkerError
from server.request import (
    Failed,
    Finished,
    Heartbeat,
    Progress,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBegin,
    ToolCallDelta,
    Usage,
)


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def tool_use_start(index: int, call_id: str, name: str) -> str:
    block = {"type": "tool_use", "id": tool_use_id(call_id), "name": name, "input": {}}
    start = {"type": "content_block_start", "index": index, "content_block": block}
    return sse("content_block_start", start)


def input_json_delta(index: int, partial_json: str) -> str:
    delta = {"type": "input_json_delta", "partial_json": partial_json}
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


async def encode(
    events: AsyncIterator, *, message_id: str, model: str, on_finish, show_thinking: bool = True
) -> AsyncIterator[str]:
    index = -1
    open_kind: str | None = None
    started = False
    thinking = ThinkingBlocks(sse, show_thinking)
    streaming_call: str | None = None  # the id of a tool_use block whose input is streaming

    def close_block():
        nonlocal open_kind
        # A thinking block ends with its signature_delta (unsigned ones are dropped by clients).
        signed = thinking.close(index) if open_kind == "thinking" else ""
        open_kind = None
        return signed + sse("content_block_stop", {"type": "content_block_stop", "index": index})

    async for event in events:
        if isinstance(event, Started):
            started = True
            usage = usage_dict(Usage(event.prompt_tokens, event.cached_tokens, 0))
            yield sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": usage,
                    },
                },
            )
            yield sse("ping", {"type": "ping"})
        elif isinstance(event, Heartbeat | Progress):
            # Queued (no message_start yet: its usage needs the cache lookup) pings too: never
            # silent; the SDKs skip ping events wherever they come.
            if started or isinstance(event, Heartbeat):
                yield sse("ping", {"type": "ping"})
        elif isinstance(event, ThinkingDelta):
            if open_kind != "thinking":
                if open_kind:
                    yield close_block()
                index += 1
                open_kind = "thinking"
                yield thinking.open(index)
            if chunk := thinking.delta(index, event.text):
                yield chunk
        elif isinstance(event, TextDelta):
            if open_kind != "text":
                if open_kind:
                    yield close_block()
                index += 1
                open_kind = "text"
                yield sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            yield sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": event.text},
                },
            )
        elif isinstance(event, ToolCallBegin):
            if open_kind:
                yield close_block()
            index += 1
            open_kind, streaming_call = "tool_use", event.id
            yield tool_use_start(index, event.id, event.name)
        elif isinstance(event, ToolCallArgs):
            yield input_json_delta(index, event.text)
        elif isinstance(event, ToolCallDelta) and event.call.id == streaming_call:
            streaming_call = None  # its input went out as it was generated
            yield close_block()
        elif isinstance(event, ToolCallDelta):
            if open_kind:
                yield close_block()
            index += 1
            call = event.call
            yield tool_use_start(index, call.id, call.name)
            yield input_json_delta(index, json.dumps(call.arguments))
            open_kind = "tool_use"
            yield close_block()
        elif isinstance(event, Finished):
            on_finish(event)
            if open_kind:
                yield close_block()
            yield sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": STOP_REASONS.get(event.reason, "end_turn"),
                        "stop_sequence": event.stop_sequence,
                    },
                    "usage": usage_dict(event.usage),
                },
            )
            yield sse("message_stop", {"type": "message_stop"})
        elif isinstance(event, Failed):
            on_finish(None)
            error = event.error if isinstance(event.error, WorkerError) else InternalError()
            yield sse("error", error_body(error)[1])
