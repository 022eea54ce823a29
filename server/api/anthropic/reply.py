"""Anthropic reply pieces: usage, tool_use ids and the non-streaming message body."""

from __future__ import annotations

from server.api.anthropic.protocol import STOP_REASONS
from server.api.thinking_signature import sign
from server.request import Collected, Usage


def usage_dict(usage: Usage) -> dict:
    # Anthropic's input_tokens excludes the tokens read from the cache.
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def thinking_block(reasoning: str, show: bool) -> dict:
    """A signed thinking block; `display: omitted` keeps only the signature (it holds the text)."""
    return {"type": "thinking", "thinking": reasoning if show else "", "signature": sign(reasoning)}


def message_body(
    result: Collected, *, message_id: str, model: str, show_thinking: bool = True
) -> dict:
    finished = result.finished
    assert finished is not None, "collect returns only once the reply finished"
    content = []
    for kind, value in result.blocks:
        if kind == "thinking":
            content.append(thinking_block(value, show_thinking))
        elif kind == "text":
            content.append({"type": "text", "text": value})
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(value.id),
                    "name": value.name,
                    "input": value.arguments,
                }
            )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(finished.reason, "end_turn"),
        "stop_sequence": finished.stop_sequence,
        "usage": usage_dict(finished.usage),
    }
