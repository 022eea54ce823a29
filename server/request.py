"""The one internal request type both protocol layers translate into, and the events coming back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


@dataclass(frozen=True)
class ImageInput:
    """An image a client sent (checked to be one): its bytes and their sha256, which keys its
    tokens in the prefix cache. A message's text holds `image_marker(n)` where image n was."""

    data: bytes
    digest: str


def image_marker(n: int) -> str:
    return f"<mlxctl-image-{n}>"


@dataclass
class ChatRequest:
    """Messages are chat-template dicts (role, content, tool_calls with object arguments)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None  # OpenAI function shape, in the client's order
    tool_choice: str | None = None  # "auto", "none", "required", or a tool name
    parallel_tool_calls: bool = True  # a forced choice may make several calls
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    # Anthropic `system` blocks as sent (joined into the first message): `cache why` names them.
    system_blocks: list[str] | None = None
    # Reasoning: True/False asks the template's switch (None: its default); reasoning past
    # `thinking_budget` tokens is closed so the answer starts (server.decoding.reasoning).
    thinking: bool | None = None
    thinking_budget: int | None = None
    # Structured output: the reply's text is JSON valid against `schema` ({"schema", "strict",
    # "name"}); enforced by a grammar where no tool may be called instead.
    text_format: dict[str, Any] | None = None
    # What the protocol adapter left out of the newest turn (an image for a text-only model):
    # the reply says it (server.api.images).
    dropped: list[str] = field(default_factory=list)
    images: list[ImageInput] = field(default_factory=list)  # for a model that reads them
    # The front door's resume of a stream a worker died in: the reply's first tokens, as the
    # dead worker sampled them (server.engine.resume); `token_marks`: say each new token's id.
    resume: list[int] = field(default_factory=list)
    token_marks: bool = False


# Events the generation thread sends to a request's HTTP handler, in this order:
# Started, then any of Progress / ThinkingDelta / TextDelta / ToolCallDelta (a
# streamed call: ToolCallBegin, ToolCallArgs..., then its ToolCallDelta), then exactly one
# Finished or Failed.
# Between any two the HTTP side may add a Heartbeat.


@dataclass
class Started:
    prompt_tokens: int
    cached_tokens: int


@dataclass
class Progress:
    processed: int
    total: int


@dataclass
class TextDelta:
    text: str


@dataclass
class ThinkingDelta:
    """Reasoning text (between the model's think markers), shown only when it was asked for."""

    text: str


@dataclass
class ToolCallDelta:
    call: ToolCall


@dataclass
class ToolCallBegin:
    """A call whose arguments stream as generated (constrained): id and name come first..."""

    id: str
    name: str


@dataclass
class ToolCallArgs:
    """...then its arguments' JSON text, piece by piece; a ToolCallDelta of that id ends it."""

    text: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, those the model reasoned with


@dataclass
class Finished:
    # "stop" (end of turn), "length", "stop_sequence", "tool_calls", "cancelled"
    reason: str
    usage: Usage
    stop_sequence: str | None = None
    ttft_s: float = 0.0
    decode_tps: float = 0.0
    queue_s: float = 0.0  # accepted -> taken by the scheduler
    drafts: dict | None = None  # speculative decoding's figures, where the reply drafted


@dataclass
class Failed:
    error: Exception


class Heartbeat:
    """Nothing happened for a while (queue wait or a long prefill): streams may send a ping."""


@dataclass
class Collected:
    """A whole reply: blocks in order ("thinking", str), ("text", str) or ("tool", ToolCall),
    and how it ended."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)
    started: Started | None = None
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(value for kind, value in self.blocks if kind == "text")

    @property
    def reasoning(self) -> str:
        return "".join(value for kind, value in self.blocks if kind == "thinking")

    @property
    def calls(self) -> list[ToolCall]:
        return [value for kind, value in self.blocks if kind == "tool"]


def new_call_id(prefix: str = "call_") -> str:
    return prefix + uuid.uuid4().hex[:24]
