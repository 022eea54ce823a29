"""Responses SSE encoder: the event grammar the openai SDK and Codex parse.

`response.created` and `response.in_progress` go out at once; then per output item
`output_item.added`, its parts and deltas, `output_item.done`; last `response.completed`
(or `response.incomplete`). Every event carries a rising `sequence_number`. A waiting stream
repeats `response.in_progress` with a stub of the response (its id and status, without the
echo of tools and instructions): Codex's idle timeout ignores SSE comments (measured on 0.171: a
5 s timeout cut a 19 s prefill that sent a comment every second). After the 200 a failure is an
`error` event, then `response.failed`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from server.api.responses.protocol import error_body
from server.api.responses.reply import (
    Frame,
    message_item,
    reasoning_item,
    status_of,
)
from server.api.responses.tools import is_custom, output_item
from server.errors import InternalError, WorkerError
from server.request import (
    Failed,
    Finished,
    Heartbeat,
    Progress,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallArgs,
    ToolCallBegin,
    ToolCallDelta,
)

# Holds a finished response when called, and returns its write (in a thread) to await.
Keep = Callable[[dict], Awaitable[None]]


class _Encoder:
    """The stream's state: the sequence number, finished items and the one open item."""

    def __init__(self, frame: Frame):
        self.frame = frame
        self.seq = 0
        self.output: list[dict] = []
        self.kind: str | None = None  # the open item: "reasoning", "message" or "call"
        self.item_id = ""
        self.text: list[str] = []
        self.call: ToolCall | None = None  # an open streamed call (id and name so far)
        self.final: dict | None = None  # the finished response, for the store

    def event(self, kind: str, **data) -> str:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def item_event(self, kind: str, **data) -> str:
        return self.event(kind, item_id=self.item_id, output_index=len(self.output), **data)

    def start(self) -> str:
        response = self.frame.response("in_progress", [])
        return self.event("response.created", response=response) + self.event(
            "response.in_progress", response=response
        )

    def keep_alive(self) -> str:
        """`response.in_progress` with a stub of the response: an event every client parses
        and none acts on (the SDK's stream only takes items its `output` lists, here none)."""
        return self.event("response.in_progress", response=self.frame.keep_alive())

    def new_id(self, prefix: str) -> str:
        """The next output item's id (a resumed stream's client has some already)."""
        return self.frame.item_id(len(self.output), prefix)

    def open(self, kind: str, item: dict) -> str:
        self.kind, self.item_id, self.text = kind, item["id"], []
        return self.event("response.output_item.added", output_index=len(self.output), item=item)

    def done(self, item: dict) -> str:
        chunk = self.event("response.output_item.done", output_index=len(self.output), item=item)
        self.output.append(item)
        self.kind, self.call = None, None
        return chunk

    # -- reasoning and text ---------------------------------------------------------------------

    def thinking(self, text: str) -> str:
        out = ""
        if self.kind != "reasoning":
            out += self.close()
            item = {
                "type": "reasoning",
                "id": self.new_id("rs"),
                "summary": [],
                "status": "in_progress",
            }
            out += self.open("reasoning", item)
            part = {"type": "summary_text", "text": ""}
            out += self.item_event(
                "response.reasoning_summary_part.added", summary_index=0, part=part
            )
        self.text.append(text)
        return out + self.item_event(
            "response.reasoning_summary_text.delta", summary_index=0, delta=text
        )

    def message(self, text: str) -> str:
        out = ""
        if self.kind != "message":
            out += self.close()
            out += self.open("message", message_item(self.new_id("msg"), "", status="in_progress"))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self.item_event("response.content_part.added", content_index=0, part=part)
        self.text.append(text)
        return out + self.item_event(
            "response.output_text.delta", content_index=0, delta=text, logprobs=[]
        )

    # -- calls ----------------------------------------------------------------------------------

    def begin_call(self, call_id: str, name: str) -> str:
        out = self.close()
        self.call = ToolCall(call_id, name, {})
        custom = is_custom(name, self.frame.tools)
        item = output_item(self.call, self.frame.tools, self.new_id("ctc" if custom else "fc"))
        item.update({"input": ""} if custom else {"arguments": "", "status": "in_progress"})
        return out + self.open("call", item)

    def call_text(self, text: str) -> str:
        """A streamed call's arguments; a custom tool's input is sent whole when it ends (its
        JSON wrapper is not the input)."""
        self.text.append(text)
        if self.call is not None and is_custom(self.call.name, self.frame.tools):
            return ""
        return self.item_event("response.function_call_arguments.delta", delta=text)

    def end_call(self, call: ToolCall) -> str:
        item = output_item(call, self.frame.tools, self.item_id)
        out = ""
        if item["type"] == "custom_tool_call":
            if item["input"]:
                out += self.item_event("response.custom_tool_call_input.delta", delta=item["input"])
            out += self.item_event("response.custom_tool_call_input.done", input=item["input"])
        else:
            if self.text:  # what the client saw, exactly
                item["arguments"] = "".join(self.text)
            else:
                out += self.item_event(
                    "response.function_call_arguments.delta", delta=item["arguments"]
                )
            out += self.item_event(
                "response.function_call_arguments.done", arguments=item["arguments"]
            )
        return out + self.done(item)

    def whole_call(self, call: ToolCall) -> str:
        return self.begin_call(call.id, call.name) + self.end_call(call)

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> str:
        """End the open reasoning or message item (a call ends with its ToolCallDelta)."""
        text = "".join(self.text)
        if self.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            return (
                self.item_event("response.reasoning_summary_text.done", summary_index=0, text=text)
                + self.item_event(
                    "response.reasoning_summary_part.done", summary_index=0, part=part
                )
                + self.done(reasoning_item(self.item_id, text, self.frame.signs_reasoning))
            )
        if self.kind == "message":
            text_part: dict[str, Any] = {
                "type": "output_text",
                "text": text,
                "annotations": [],
                "logprobs": [],
            }
            return (
                self.item_event(
                    "response.output_text.done", content_index=0, text=text, logprobs=[]
                )
                + self.item_event("response.content_part.done", content_index=0, part=text_part)
                + self.done(message_item(self.item_id, text))
            )
        return ""

    def finish(self, finished: Finished) -> str:
        out = self.close()
        status, incomplete = status_of(finished)
        response = self.frame.response(status, self.output, finished.usage, incomplete)
        self.final = response
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self.event(kind, response=response)

    def fail(self, error: WorkerError) -> str:
        body = error_body(error)[1]["error"]
        code = "rate_limit_exceeded" if error.kind == "overloaded" else "server_error"
        failed = self.frame.response(
            "failed", self.output, error={"code": code, "message": body["message"]}
        )
        self.final = failed
        return self.event(
            "error", code=body["code"] or code, message=body["message"], param=body["param"]
        ) + self.event("response.failed", response=failed)


async def encode(
    events: AsyncIterator, *, frame: Frame, on_finish, keep: Keep | None = None
) -> AsyncIterator[str]:
    """The SSE text of a reply; `keep` holds the finished response before its last event (a
    client that has seen it can chain from it at once) and writes it while that event leaves."""
    out = _Encoder(frame)
    yield out.start()
    async for event in events:
        if isinstance(event, Heartbeat | Progress):
            if isinstance(event, Heartbeat):
                yield out.keep_alive()
        elif isinstance(event, ThinkingDelta):
            yield out.thinking(event.text)
        elif isinstance(event, TextDelta):
            yield out.message(event.text)
        elif isinstance(event, ToolCallBegin):
            yield out.begin_call(event.id, event.name)
        elif isinstance(event, ToolCallArgs):
            yield out.call_text(event.text)
        elif isinstance(event, ToolCallDelta):
            streamed = out.call is not None and out.call.id == event.call.id
            yield out.end_call(event.call) if streamed else out.whole_call(event.call)
        elif isinstance(event, Finished | Failed):
            if isinstance(event, Finished):
                on_finish(event)
                last = out.finish(event)
            else:
                on_finish(None)
                error = event.error if isinstance(event.error, WorkerError) else InternalError()
                last = out.fail(error)
            written = keep(out.final) if keep is not None and out.final is not None else None
            yield last
            if written is not None:
                await written  # the stream ends once stored: a graceful stop waits for it
