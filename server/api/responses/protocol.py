"""OpenAI Responses request models (unknown fields accepted), conversion to ChatRequest, errors.

The conversation comes in `input`, after a stored response's when `previous_response_id` names
one (the routes look it up). The Conversations API is refused with a clear 400.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from server.api.openai.protocol import error_body as openai_error_body
from server.api.responses.items import messages_of
from server.api.responses.tools import ToolSet, tool_choice, tool_set
from server.api.unicode_text import replace_unencodable
from server.errors import BadRequest, WorkerError
from server.request import ChatRequest, Sampling


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Reasoning(_Open):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: str | None = None


class TextFormat(_Open):
    type: Literal["text", "json_schema", "json_object"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None  # true or false, not 0 or "yes"


class TextConfig(_Open):
    format: TextFormat | None = None


class InputTokensRequest(_Open):
    """`POST /v1/responses/input_tokens`: what the prompt would be, counted."""

    model: str  # as every client sends it; a model not served here is the 404
    input: str | list[Any] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _replace_unencodable(cls, data: Any) -> Any:
        # Before any field reads it: a lone surrogate must not reach the tokenizer (a 500).
        return replace_unencodable(data)


class ResponsesRequest(InputTokensRequest):
    model: str
    input: str | list[Any]
    stream: bool = False
    store: bool | None = None
    background: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    metadata: dict[str, str] | None = None
    include: list[str] | None = None


def _refused(body: InputTokensRequest) -> None:
    """What this server does not serve: the Conversations API."""
    if body.conversation:
        raise BadRequest(
            "conversations are not served here: chain responses with previous_response_id, or "
            "send the whole conversation in input",
            param="conversation",
        )


def _text_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"schema": {"type": "object"}, "strict": True, "name": "json_object"}
    if not isinstance(fmt.schema_, dict):
        raise BadRequest("text.format of type json_schema needs a schema", param="text.format")
    return {"schema": fmt.schema_, "strict": bool(fmt.strict), "name": fmt.name or ""}


def _thinking(body: InputTokensRequest) -> bool | None:
    """`reasoning.effort: none` turns the template's reasoning off; any other effort on."""
    effort = body.reasoning.effort if body.reasoning else None
    return None if effort is None else effort != "none"


def convert(
    body: InputTokensRequest, items: list[Any] | None = None
) -> tuple[ChatRequest, ToolSet]:
    """The internal request, and the tools it offers (to map the model's calls back). `items`:
    the whole conversation when the route resolved a previous response (default: `input`)."""
    _refused(body)
    tools = tool_set(body.tools)
    choice, tools = tool_choice(body.tool_choice, tools)
    sampling = Sampling()
    max_tokens = None
    if isinstance(body, ResponsesRequest):
        sampling = Sampling(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=body.top_p or 1.0,
        )
        max_tokens = body.max_output_tokens
    request = ChatRequest(
        messages=messages_of(body.instructions, body.input if items is None else items),
        tools=tools.functions or None,
        tool_choice=choice if tools.functions else None,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        max_tokens=max_tokens,
        sampling=sampling,
        thinking=_thinking(body),
        text_format=_text_format(body.text),
    )
    if choice not in (None, "auto", "none") and not tools.functions:
        raise BadRequest(
            "tool_choice requires a tool, and no usable tool was given", param="tool_choice"
        )
    return request, tools


def to_chat_request(body: InputTokensRequest) -> ChatRequest:
    return convert(body)[0]


def error_body(exc: WorkerError) -> tuple[int, dict]:
    """The Responses error shape is Chat Completions': {"error": {message, type, param, code}}."""
    return openai_error_body(exc)
