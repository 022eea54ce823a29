"""OpenAI chat.completion.chunk SSE encoder: turns job events into `data:` lines."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from server.api.openai.protocol import FINISH_REASONS, error_body
from server.api.openai.reply import usage_dict
from server.errors import InternalError, WorkerError
from server.request import (
    Failed,
    Finished,
    Heartbeat,
    TextDelta,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBegin,
    ToolCallDelta,
)


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def encode(
    events: AsyncIterator, *, completion_id: str, model: str, include_usage: bool, on_finish
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> str:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    streaming_call: str | None = None  # the id of a call whose arguments are streaming
    async for event in events:
        if isinstance(event, Heartbeat):
            yield ": keep-alive\n\n"  # an SSE comment: proxies keep the line, clients skip it
        elif isinstance(event, TextDelta):
            yield chunk({"content": event.text})
        elif isinstance(event, ThinkingDelta):
            yield chunk({"reasoning_content": event.text})
        elif isinstance(event, ToolCallBegin):
            streaming_call = event.id
            function = {"name": event.name, "arguments": ""}
            yield chunk(
                {
                    "tool_calls": [
                        {"index": calls, "id": event.id, "type": "function", "function": function}
                    ]
                }
            )
        elif isinstance(event, ToolCallArgs):
            yield chunk({"tool_calls": [{"index": calls, "function": {"arguments": event.text}}]})
        elif isinstance(event, ToolCallDelta) and event.call.id == streaming_call:
            streaming_call = None  # its arguments went out as they were generated
            calls += 1
        elif isinstance(event, ToolCallDelta):
            call = event.call
            # id, type and name only in the first delta of a call; arguments follow.
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": calls,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            yield chunk(
                {
                    "tool_calls": [
                        {"index": calls, "function": {"arguments": json.dumps(call.arguments)}}
                    ]
                }
            )
            calls += 1
        elif isinstance(event, Finished):
            on_finish(event)
            yield chunk({}, FINISH_REASONS.get(event.reason, "stop"))
            if include_usage:
                yield sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage_dict(event.usage),
                    }
                )
            yield sse("[DONE]")
        elif isinstance(event, Failed):
            on_finish(None)
            error = event.error if isinstance(event.error, WorkerError) else InternalError()
            yield sse(error_body(error)[1])
            yield sse("[DONE]")  # clients wait for it: without it a failed stream looks cut off
