"""Anthropic request models (unknown fields accepted), conversion to ChatRequest, error shapes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.api.documents import ImageText, document_text, reads_as_text
from server.api.image_input import Images
from server.api.images import MEDIA_TYPES, dropped_note, placeholder
from server.api.thinking_signature import reasoning_of
from server.api.unicode_text import replace_unencodable
from server.errors import BadRequest, WorkerError
from server.request import ChatRequest, Sampling


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    # Claude Code 2.1.19x sends "system" turns mid-conversation (beta mid-conversation-system);
    # chat templates take a system turn only first, so one becomes user text (see _messages).
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Tool(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingConfig(_Open):
    # "adaptive" and "between_tools" think as the model sees fit: on, with no budget of theirs.
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(default=None, ge=1)
    # "summarized", "omitted", and Claude Code 2.1.332's "highlights" (its side requests): any
    # value but "omitted" shows the reasoning, so a new one never costs a request.
    display: str | None = None


class CountTokensRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _replace_unencodable(cls, data: Any) -> Any:
        # Before any field reads it: a lone surrogate must not reach the tokenizer (a 500).
        return replace_unencodable(data)


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float = Field(default=1.0, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise BadRequest(f"{where}: each content block needs a string 'type'")
    return block["type"]


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if isinstance(system, list):
        for i, block in enumerate(system):
            if _block_type(block, f"system[{i}]") != "text":
                raise BadRequest(f"system[{i}]: only text blocks are allowed in system")
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(str(block.get("text", "")) for block in system)


def _tool_result_text(block: dict[str, Any], where: str, images: Images | None) -> str:
    content = block.get("content", "")
    if isinstance(content, list):
        parts = []
        for j, inner in enumerate(content):
            if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
                raise BadRequest(f"{where}.content[{j}]: each content block needs a 'type'")
            if inner["type"] == "text":
                parts.append(str(inner.get("text", "")))
            elif inner["type"] == "image" and images is not None:
                parts.append(images.anthropic(inner, f"{where}.content[{j}]"))
            elif inner["type"] == "document" and reads_as_text(inner):
                parts.append(document_text(inner, f"{where}.content[{j}]", _image_text(images)))
            elif inner["type"] in ("image", "document"):
                # A tool's screenshot must not fail an agent's whole turn: say what was dropped.
                parts.append(placeholder(inner["type"], images is not None))
        content = "\n".join(parts)
    elif not isinstance(content, str):
        content = json.dumps(content)
    return f"Error: {content}" if block.get("is_error") else content


def _image_text(images: Images | None) -> ImageText:
    """How a document's image becomes prompt text: read where the model reads images."""
    if images is not None:
        return images.anthropic
    return lambda block, where: placeholder("image")


def _messages(
    body: CountTokensRequest, dropped: list[str], images: Images | None = None
) -> list[dict[str, Any]]:
    """The template's messages; what the newest turn loses goes into `dropped`; images go
    into `images` where the model reads them (None: they become notes)."""
    out: list[dict[str, Any]] = []
    system = _system_text(body.system)
    if system:
        out.append({"role": "system", "content": system})
    offered: set[str] = set()  # tool_use ids of the previous assistant turn
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        blocks = [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content
        if m.role == "assistant":
            text, calls, reasoning = [], [], []
            for j, block in enumerate(blocks):
                kind = _block_type(block, f"{where}.content[{j}]")
                if kind == "text":
                    text.append(str(block.get("text", "")))
                elif kind == "tool_use":
                    args = block.get("input") or {}
                    if not isinstance(block.get("name"), str) or not isinstance(args, dict):
                        raise BadRequest(f"{where}.content[{j}]: tool_use needs name and input")
                    calls.append(
                        {
                            "id": block.get("id"),
                            "type": "function",
                            "function": {"name": block["name"], "arguments": args},
                        }
                    )
                elif kind == "thinking":
                    # Ours carry the exact reasoning (also when display omitted its text).
                    signed = reasoning_of(block.get("signature"))
                    reasoning.append(
                        signed if signed is not None else str(block.get("thinking") or "")
                    )
                # redacted_thinking: accepted, its data means nothing to a local model
            offered = {c["id"] for c in calls if isinstance(c["id"], str)}
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
            if any(reasoning):
                # The name Qwen3-style templates (and most others that keep reasoning) read.
                message["reasoning_content"] = "\n".join(r for r in reasoning if r)
            if calls:
                message["tool_calls"] = calls
            out.append(message)
            continue
        text = []
        for j, block in enumerate(blocks):
            kind = _block_type(block, f"{where}.content[{j}]")
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "image" and images is not None:
                text.append(images.anthropic(block, f"{where}.content[{j}]"))
            elif kind == "document" and reads_as_text(block):
                text.append(document_text(block, f"{where}.content[{j}]", _image_text(images)))
            elif kind in MEDIA_TYPES:
                text.append(placeholder(kind, images is not None))
                if i == len(body.messages) - 1:
                    note = dropped_note(f"{where}.content[{j}]", kind, images is not None)
                    dropped.append(note)
            elif kind == "tool_result":
                if text:
                    out.append({"role": "user", "content": "\n".join(text)})
                    text = []
                if not isinstance(block.get("tool_use_id"), str):
                    raise BadRequest(f"{where}.content[{j}]: tool_result needs tool_use_id")
                if block["tool_use_id"] not in offered:
                    # As the API does: a result must answer a call of the previous turn.
                    raise BadRequest(
                        f"{where}.content[{j}]: unexpected tool_use_id {block['tool_use_id']!r} "
                        "in tool_result blocks: each tool_result block must have a "
                        "corresponding tool_use block in the previous message"
                    )
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": block["tool_use_id"],
                        "content": _tool_result_text(block, f"{where}.content[{j}]", images),
                    }
                )
        if text or not blocks:
            out.append({"role": "user", "content": "\n".join(text)})
    return out


def _tools(tools: list[Tool] | None) -> list[dict[str, Any]] | None:
    # Server-side tools (web search and the like) have no input_schema; the model cannot run them.
    usable = [t for t in tools or [] if t.input_schema is not None]
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description or "",
                "parameters": t.input_schema,
            },
        }
        for t in usable
    ] or None


def _tool_choice(choice: ToolChoice | None) -> str | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("tool_choice of type 'tool' needs a name")
        return choice.name
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def thinking_of(body: CountTokensRequest) -> tuple[bool, int | None]:
    """(reasoning on, its budget): off when absent or disabled, as the API has it."""
    config = body.thinking
    if config is None or config.type == "disabled":
        return False, None
    if config.type == "enabled" and config.budget_tokens is None:
        raise BadRequest("thinking.budget_tokens: Field required")
    return True, config.budget_tokens


def shows_thinking(body: CountTokensRequest) -> bool:
    """False when the client asked for `display: omitted` (signed blocks without their text)."""
    return not (body.thinking and body.thinking.display == "omitted")


def to_chat_request(body: CountTokensRequest, *, vision: bool = False) -> ChatRequest:
    """`vision`: the model reads images (else each becomes a note)."""
    thinking, budget = thinking_of(body)
    images = Images() if vision else None
    sampling = Sampling()
    if isinstance(body, MessagesRequest):
        sampling = Sampling(
            temperature=body.temperature, top_p=body.top_p or 1.0, top_k=body.top_k or 0
        )
    dropped: list[str] = []
    return ChatRequest(
        messages=_messages(body, dropped, images),
        tools=_tools(body.tools),
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=not (body.tool_choice and body.tool_choice.disable_parallel_tool_use),
        max_tokens=getattr(body, "max_tokens", None),
        stop=list(getattr(body, "stop_sequences", None) or []),
        sampling=sampling,
        system_blocks=[str(b.get("text", "")) for b in body.system]
        if isinstance(body.system, list)
        else None,
        thinking=thinking,
        thinking_budget=budget,
        dropped=dropped,
        images=images.inputs if images else [],
    )


STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_calls": "tool_use",
    "cancelled": "end_turn",
}

_TYPES = {
    "bad_request": "invalid_request_error",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "not_found": "not_found_error",
    "too_large": "request_too_large",
    "overloaded": "overloaded_error",
    "unavailable": "overloaded_error",
    "internal": "api_error",
}


def error_body(exc: WorkerError) -> tuple[int, dict]:
    # Anthropic answers a full queue with 529 overloaded_error, not 429.
    status = 529 if exc.kind == "overloaded" else exc.status
    return status, {
        "type": "error",
        "error": {"type": _TYPES.get(exc.kind, "api_error"), "message": exc.message},
    }
