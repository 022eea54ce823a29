"""OpenAI request models (unknown fields accepted), conversion to ChatRequest, and error shapes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.api.documents import inline_file_text
from server.api.image_input import Images
from server.api.images import MEDIA_TYPES, dropped_note, placeholder
from server.api.unicode_text import replace_unencodable
from server.errors import BadRequest, WorkerError
from server.request import ChatRequest, Sampling


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionDef(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class CallFunction(_Open):
    name: str
    arguments: str | dict[str, Any] = "{}"


class MessageToolCall(_Open):
    id: str | None = None
    type: str = "function"
    function: CallFunction


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    # Reasoning on or off (default: the model's template decides): "none" turns it off.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    enable_thinking: bool | None = None  # as vLLM and mlx-lm clients send it
    chat_template_kwargs: dict[str, Any] | None = None  # only `enable_thinking` is read

    @model_validator(mode="before")
    @classmethod
    def _replace_unencodable(cls, data: Any) -> Any:
        # Before any field reads it: a lone surrogate must not reach the tokenizer (a 500).
        return replace_unencodable(data)


def _text(
    content: str | list[dict[str, Any]] | None,
    where: str,
    dropped: list[str] | None = None,
    images: Images | None = None,
) -> str:
    """The content's text; images go into `images` where the model reads them, other media
    become a note (said in `dropped` where that is a list)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            parts.append(str(part.get("text", "")))
        elif kind == "image_url" and images is not None:
            parts.append(images.openai(part, f"{where}.content[{j}]"))
        elif kind == "file" and (read := _file_text(part, f"{where}.content[{j}]")) is not None:
            parts.append(read)
        elif kind in MEDIA_TYPES:
            parts.append(placeholder(kind, images is not None))
            if dropped is not None:
                dropped.append(dropped_note(f"{where}.content[{j}]", kind, images is not None))
        else:
            raise BadRequest(f"{where}: unsupported content part type {kind!r}", param="messages")
    return "".join(parts)


def _file_text(part: dict[str, Any], where: str) -> str | None:
    file = part.get("file")
    if not isinstance(file, dict):
        return None
    try:
        return inline_file_text(file, where)
    except BadRequest as exc:
        exc.param = exc.param or "messages"
        raise


def _arguments(raw: str | dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        # The arguments are JSON inside JSON: their own escapes may hold a lone surrogate.
        value = replace_unencodable(json.loads(raw)) if raw.strip() else {}
    except json.JSONDecodeError:
        raise BadRequest(
            f"{where}: function.arguments is not valid JSON", param="messages"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: function.arguments must be a JSON object", param="messages")
    return value


def _tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return choice["function"]["name"]
    raise BadRequest(
        "tool_choice must be auto, none, required or a named function", param="tool_choice"
    )


def _thinking(body: ChatCompletionRequest) -> bool | None:
    """The request's reasoning switch: None leaves the template's default."""
    switch = (body.chat_template_kwargs or {}).get("enable_thinking")
    if body.enable_thinking is not None:
        switch = body.enable_thinking
    if body.reasoning_effort is not None:
        switch = body.reasoning_effort != "none"
    if switch is not None and not isinstance(switch, bool):
        raise BadRequest("enable_thinking must be true or false", param="chat_template_kwargs")
    return switch


def to_chat_request(body: ChatCompletionRequest, *, vision: bool = False) -> ChatRequest:
    """`vision`: the model reads images (else each becomes a note)."""
    if body.n != 1:
        raise BadRequest("only n=1 is supported", param="n")
    messages: list[dict[str, Any]] = []
    dropped: list[str] = []
    images = Images() if vision else None
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        role = "system" if m.role == "developer" else m.role
        newest = dropped if i == len(body.messages) - 1 else None
        out: dict[str, Any] = {"role": role, "content": _text(m.content, where, newest, images)}
        if m.role == "assistant" and m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": _arguments(c.function.arguments, where),
                    },
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            out["tool_call_id"] = m.tool_call_id
        reasoning = (m.model_extra or {}).get("reasoning_content") or (m.model_extra or {}).get(
            "reasoning"
        )
        if m.role == "assistant" and isinstance(reasoning, str) and reasoning:
            out["reasoning_content"] = reasoning  # rendered where the template keeps it
        messages.append(out)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return ChatRequest(
        messages=messages,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        sampling=Sampling(temperature=body.temperature, top_p=body.top_p, seed=body.seed),
        thinking=_thinking(body),
        dropped=dropped,
        images=images.inputs if images else [],
    )


FINISH_REASONS = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "cancelled": "stop",
}

_TYPES = {
    "bad_request": "invalid_request_error",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "not_found": "not_found_error",
    "too_large": "invalid_request_error",
    "overloaded": "rate_limit_error",
    "unavailable": "server_error",
    "internal": "server_error",
}


def error_body(exc: WorkerError) -> tuple[int, dict]:
    kind = _TYPES.get(exc.kind, "server_error")
    code = exc.code or {
        "too_large": "request_too_large",
        "unauthorized": "invalid_api_key",
        "overloaded": "rate_limit_exceeded",
        "unavailable": "service_unavailable",
    }.get(exc.kind)
    return exc.status, {
        "error": {"message": exc.message, "type": kind, "param": exc.param, "code": code}
    }
