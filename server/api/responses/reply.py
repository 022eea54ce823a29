"""Responses reply pieces: usage, output items, and the `response` object (whole or streamed)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.api.responses.protocol import ResponsesRequest
from server.api.responses.tools import ToolSet, is_custom, output_item
from server.api.thinking_signature import sign
from server.request import Collected, Finished, Usage


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def usage_dict(usage: Usage) -> dict:
    # Responses' input_tokens includes the cached ones (Chat Completions' convention).
    return {
        "input_tokens": usage.prompt_tokens,
        # Nothing is billed for writing: 0, as Anthropic's cache_creation_input_tokens is.
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def status_of(finished: Finished) -> tuple[str, dict | None]:
    """(status, incomplete_details): a reply cut at the token limit is incomplete."""
    if finished.reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finished.reason == "cancelled":
        return "cancelled", None
    return "completed", None


def reasoning_item(item_id: str, text: str, encrypted: bool = False) -> dict:
    # The model's own reasoning, sent as its summary: what Codex and SDK examples display.
    summary = [{"type": "summary_text", "text": text}] if text else []
    item = {"type": "reasoning", "id": item_id, "summary": summary, "status": "completed"}
    if encrypted:  # signed as a thinking signature is: it brings the exact reasoning back
        item["encrypted_content"] = sign(text)
    return item


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content if text or status == "completed" else [],
    }


@dataclass
class Frame:
    """What every `response` object of one request repeats: ids and the request's echo."""

    body: ResponsesRequest
    tools: ToolSet
    stored: bool = False  # kept in the store once finished
    background: bool = False  # run detached, polled with GET
    response_id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    item_ids: list[str] = field(default_factory=list)  # a resumed stream's, by output index

    def item_id(self, index: int, prefix: str) -> str:
        """The id of output item `index`: the one its client has where the stream resumed."""
        return self.item_ids[index] if index < len(self.item_ids) else new_id(prefix)

    def response(
        self,
        status: str,
        output: list[dict],
        usage: Usage | None = None,
        incomplete: dict | None = None,
        error: dict | None = None,
    ) -> dict[str, Any]:
        """The response object (its `output` so far when in progress)."""
        b = self.body
        reasoning = b.reasoning.model_dump(exclude_none=True) if b.reasoning else {}
        text = b.text.model_dump(by_alias=True, exclude_none=True) if b.text else {}
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": self.background,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": b.instructions,
            "max_output_tokens": b.max_output_tokens,
            "metadata": b.metadata or {},
            "model": b.model,
            "output": output,
            "parallel_tool_calls": b.parallel_tool_calls is not False,
            "previous_response_id": b.previous_response_id,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": self.stored,
            "temperature": 1.0 if b.temperature is None else b.temperature,
            "text": {"format": {"type": "text"}, **text},
            "tool_choice": b.tool_choice or "auto",
            "tools": b.tools or [],
            "top_p": b.top_p or 1.0,
            "truncation": "disabled",
            "usage": usage_dict(usage) if usage is not None else None,
            "user": None,
        }

    def keep_alive(self) -> dict[str, Any]:
        """The smallest response the SDK's type and Codex take: its identity and status, none
        of the echo (Codex's tools alone are ~30 KB, once a second while a prompt prefills).
        The whole response comes in `response.created` and the final event."""
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "model": self.body.model,
            "output": [],
            "parallel_tool_calls": self.body.parallel_tool_calls is not False,
            "tool_choice": self.body.tool_choice or "auto",
            "tools": [],
        }

    @property
    def signs_reasoning(self) -> bool:
        """Reasoning items carry `encrypted_content` (what stateless clients such as Codex ask
        for, to send the reasoning back)."""
        return "reasoning.encrypted_content" in (self.body.include or [])


def output_items(result: Collected, frame: Frame) -> list[dict]:
    out, tools = [], frame.tools
    for kind, value in result.blocks:
        if kind == "thinking":
            out.append(reasoning_item(new_id("rs"), value, frame.signs_reasoning))
        elif kind == "text":
            out.append(message_item(new_id("msg"), value))
        else:
            prefix = "ctc" if is_custom(value.name, tools) else "fc"
            out.append(output_item(value, tools, new_id(prefix)))
    return out


def response_body(result: Collected, *, frame: Frame) -> dict:
    assert result.finished is not None
    status, incomplete = status_of(result.finished)
    output = output_items(result, frame)
    return frame.response(status, output, result.finished.usage, incomplete)
