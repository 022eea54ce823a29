"""A minimal Anthropic-request -> chat-template conversion, for the prefix cache's tests.

Not the worker's adapter (that lives with the protocol layer); just enough to render captured
Claude Code requests through a tokenizer's chat template the way a server would, normalised by
the worker's own rule (server.prompt.normalize) unless asked not to.
"""

from __future__ import annotations

from typing import Any

from server.prompt.normalize import normalize
from server.request import ChatRequest


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def anthropic_to_template_inputs(
    body: dict, *, normalized: bool = True
) -> tuple[list[dict], list[dict]]:
    """(messages, tools) in the shape `tokenizer.apply_chat_template` expects."""
    messages: list[dict] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        if message["role"] == "assistant":
            calls = [
                {"type": "function", "function": {"name": b["name"], "arguments": b["input"]}}
                for b in content
                if b.get("type") == "tool_use"
            ]
            text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
            messages.append({"role": "assistant", "content": text, "tool_calls": calls})
            continue
        text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
        if text:
            messages.append({"role": "user", "content": text})
        for block in content:
            if block.get("type") == "tool_result":
                messages.append({"role": "tool", "content": _text_of(block.get("content"))})
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema", {}),
            },
        }
        for t in body.get("tools", [])
    ]
    if normalized:
        request = normalize(ChatRequest(messages=messages, tools=tools))
        messages, tools = request.messages, request.tools or []
    return messages, tools


def render_tokens(tokenizer, body: dict, *, normalized: bool = True) -> list[int]:
    """Token ids of the prompt `body` renders to (generation prompt appended)."""
    messages, tools = anthropic_to_template_inputs(body, normalized=normalized)
    ids = tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=True, add_generation_prompt=True
    )
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)
