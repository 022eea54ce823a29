"""The conversation behind a stored response: its input items with ids, the prefix a
`previous_response_id` stands for, and the items listed in pages (`/input_items`)."""

from __future__ import annotations

import uuid
from typing import Any

from server.errors import BadRequest

# The id prefix OpenAI gives each kind of item (input items need ids to be listed and paged).
_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}


def as_items(given: str | list[Any]) -> list[Any]:
    """`input` as a list of items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given)


def with_ids(items: list[Any]) -> list[Any]:
    """The items as stored and listed: each with an id and a type, a message's text as parts
    (rendered the same: parts join to the text)."""
    out = []
    for item in items:
        if not isinstance(item, dict):
            out.append(item)
            continue
        kind = item.get("type", "message")
        item = {**item, "type": kind}
        if not item.get("id"):
            item["id"] = f"{_PREFIXES.get(kind, 'item')}_{uuid.uuid4().hex[:24]}"
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        out.append(item)
    return out


def conversation_of(record: dict[str, Any]) -> list[Any]:
    """What a follow-up continues: the stored response's input items, then its output."""
    return [*record["input_items"], *record["response"].get("output", [])]


def page(items: list[Any], after: str | None, limit: int, order: str) -> dict[str, Any]:
    """One page of `items` as OpenAI lists them: `after` an item id, newest first by default."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item.get("id") if isinstance(item, dict) else None for item in ordered]
        if after not in ids:
            raise BadRequest(f"no input item with id {after!r} in this response", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
