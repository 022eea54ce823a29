"""Render an internal ChatRequest into prompt token ids: normalize, chat template, encode."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from server.decoding.constrained.plan import can_constrain
from server.decoding.constrained.plan import plan as plan_constraint
from server.decoding.constrained.text_format import plan_text
from server.decoding.reasoning import opens_reasoning
from server.errors import BadRequest, ContextLengthExceeded
from server.model.vision import ImageLayout, ImageSpan
from server.prompt.copy_views import PATCH_TOOL, CopyViews, writes_json_calls
from server.prompt.image_tokens import expand_markers, key_images
from server.prompt.long_prompts import LengthBound, give_back_memory
from server.prompt.normalize import normalize
from server.prompt.segments import SegmentEncoder
from server.request import ChatRequest

log = logging.getLogger("server.prompt")


@dataclass
class Rendered:
    tokens: list[int]
    # Text forced at the start of the reply (tool_choice); the output parser is primed with it.
    primed: str
    tools: list[dict] | None
    parse_tools: bool
    text: str = ""  # the rendered prompt (with `primed`); `cache why` maps tokens back onto it
    # Tokens of the system+tools prefix that every session on this system prompt shares.
    system_len: int = 0
    reasoning: bool = False  # the prompt opens a think block: the reply starts reasoning
    # Where the generation prompt that opens it begins: untrimmable caches checkpoint there, as
    # the next turn renders this reply without that think block when the template drops it.
    turn_start: int = 0
    thinking: bool = True  # reasoning is shown (False: the request turned it off)
    # The tool-call grammar decoding keeps to (server.decoding.constrained); None: unconstrained.
    constraint: Any = None
    images: list[ImageSpan] = field(default_factory=list)  # where the prompt's images are
    # The last `resumed` of `tokens` are the reply's first (a resumed stream): no prompt tokens.
    resumed: int = 0
    # The prompt's pieces as the model writes them back, for copy drafts (server.prompt.copy_views).
    copy_views: list[list[int]] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return len(self.tokens) - self.resumed


def context_length(config: dict, tokenizer: Any) -> int | None:
    """The model's context window from its config (text_config for multimodal wrappers)."""
    for source in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"):
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**8 else None


def canonical_tools(tools: list[dict] | None) -> list[dict] | None:
    """Tools sorted by name with a fixed key order, so equal tool sets render to equal tokens."""
    if not tools:
        return None
    out = []
    for tool in sorted(tools, key=lambda t: t["function"]["name"]):
        fn = tool["function"]
        entry = {"name": fn["name"]}
        if fn.get("description"):
            entry["description"] = fn["description"]
        entry["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": entry})
    return out


class PromptRenderer:
    def __init__(
        self,
        tokenizer: Any,
        config: dict,
        max_output_tokens: int | None = None,
        images: ImageLayout | None = None,
        copy_views: bool = False,
    ):
        """`copy_views`: give requests their prompt's pieces as the model writes them back (line
        numbers off, JSON-escaped where its tool calls are JSON), for copy drafts."""
        self.tokenizer = tokenizer
        self.images = images  # how this model reads images (None: text only)
        self.context_length = context_length(config, tokenizer)
        self.max_output_tokens = max_output_tokens  # the worker's cap on any reply
        self.has_tools = bool(getattr(tokenizer, "has_tool_calling", False))
        self.encoder = SegmentEncoder(tokenizer)
        self.length_bound = LengthBound(tokenizer, self.encoder.encode, self.context_length)
        self.views = CopyViews(self.encoder, writes_json_calls(tokenizer)) if copy_views else None

    @functools.cached_property
    def drops_tools(self) -> bool:
        """Whether the chat template leaves tools out of the prompt (SmolLM2's does): a probe
        tool's name is nowhere in what it renders."""
        probe = canonical_tools([{"type": "function", "function": {"name": "probe_tool_7f3a"}}])
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}],
                tokenize=False,
                add_generation_prompt=True,
                tools=probe,
            )
        except Exception:  # a template that rejects the probe still renders tools somehow
            return False
        return isinstance(text, str) and "probe_tool_7f3a" not in text

    def tools_status(self) -> str:
        """/v1/status's `tools`: what becomes of a request's tools."""
        if self.drops_tools:
            return "dropped by the chat template"
        return "rendered, calls parsed" if self.has_tools else "rendered, calls not parsed"

    def _check_forced_choice(self, request: ChatRequest) -> None:
        """A forced tool_choice this model cannot honour is a 400, never a reply in plain text."""
        choice = request.tool_choice
        if not request.tools or choice in (None, "auto", "none"):
            return
        if self.drops_tools:
            reason = "this model's chat template drops tools"
        elif not self.has_tools:
            reason = "mlx-lm knows no tool-call syntax for this model (--tool-parser sets one)"
        else:
            return
        message = f"tool_choice {choice!r} cannot be enforced: {reason}"
        raise BadRequest(message, param="tool_choice")

    def _forced_opening(self, choice: str | None, tools: list[dict] | None) -> str:
        """Prompt text that makes the model call a tool when tool_choice demands one."""
        if not (tools and self.has_tools) or choice in (None, "auto", "none"):
            return ""
        start = self.tokenizer.tool_call_start
        if choice == "required":
            return start
        if choice not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"tool_choice names an unknown tool: {choice!r}", param="tool_choice")
        module = getattr(self.tokenizer.tool_parser, "__module__", "")
        if module.endswith("qwen3_coder"):
            return f"{start}\n<function={choice}>\n"
        if module.endswith("json_tools"):
            # No trailing space: models write `":` then ` {"`, so a bare space throws them off.
            return f'{start}\n{{"name": {json.dumps(choice)}, "arguments":'
        return start

    def render(self, request: ChatRequest, *, check_context: bool = True) -> Rendered:
        if not request.messages:
            raise BadRequest("messages must not be empty", param="messages")
        request = normalize(request)
        if check_context:  # (a token count decodes nothing: it may ask for what cannot be)
            self._check_forced_choice(request)
        tools = None if request.tool_choice == "none" else canonical_tools(request.tools)
        messages = request.messages
        continue_final = messages[-1]["role"] == "assistant" and bool(messages[-1].get("content"))
        kwargs: dict[str, Any] = {"tools": tools} if tools else {}
        # The template's own reasoning switch (Qwen3's enable_thinking; mlx-lm renames it).
        switch = {} if request.thinking is None else {"enable_thinking": request.thinking}
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                **kwargs,
                **switch,
            )
        except Exception as exc:
            # Templates raise on shapes they do not support (e.g. roles out of order).
            raise BadRequest(f"the chat template rejected these messages: {exc}") from exc
        order: list = []
        if request.images:
            if self.images is None:
                raise BadRequest("this model has no vision input")
            text, order = expand_markers(text, request.images, self.images)
        constrainable = bool(tools and self.has_tools) and can_constrain(self.tokenizer)
        constraint = None
        if constrainable and check_context:  # (without it, a token count: nothing decodes)
            constraint = plan_constraint(
                self.tokenizer, tools, request.tool_choice, request.parallel_tool_calls
            )
        if request.text_format and check_context and constraint is None:
            constraint = self._text_constraint(request, tools)
        # A forced call is the grammar's job: the prompt stays as `auto` renders it.
        if check_context:
            forced = constraint is not None and constraint.forced
        else:
            forced = constrainable and request.tool_choice not in (None, "auto", "none")
        primed = "" if forced else self._forced_opening(request.tool_choice, tools)
        try:
            at_least = self.length_bound.at_least(text + primed) if check_context else None
            if at_least is not None:
                raise ContextLengthExceeded(at_least, self.context_length or 0, at_least=True)
            tokens = self.encoder.encode(text + primed)
        finally:
            give_back_memory(len(text))
        reasoning = opens_reasoning(self.tokenizer, tokens)
        if reasoning and (primed or forced):
            # A forced call is the answer: close the think block the template opened first
            # (the grammar, or the primed opening, then starts the call right after it).
            primed = f"{self.tokenizer.think_end}\n\n{primed}"
            tokens, reasoning = self.encoder.encode(text + primed), False
        spans: list[ImageSpan] = []
        if order and self.images is not None:  # (a token count needs no pixels)
            tokens, spans = key_images(tokens, order, self.images, pixels=check_context)
        if check_context and self.context_length and len(tokens) >= self.context_length:
            raise ContextLengthExceeded(len(tokens), self.context_length)
        if forced and constraint is not None:
            self._check_call_budget(request, constraint, len(tokens))
        system_len = self._system_len(messages, kwargs, tokens, switch)
        turn_start = self._turn_start(text, tokens, kwargs, switch) if reasoning else 0
        return Rendered(
            tokens,
            primed,
            tools,
            parse_tools=bool(tools) and self.has_tools,
            system_len=system_len,
            text=text + primed,
            reasoning=reasoning,
            thinking=request.thinking is not False,
            turn_start=turn_start,
            constraint=constraint,
            images=spans,
            # Copy drafts read them (a token count decodes nothing).
            copy_views=self._copy_views(text, tools) if check_context else [],
        )

    def _copy_views(self, text: str, tools: list[dict] | None) -> list[list[int]]:
        """The prompt's pieces as the model writes them back (server.prompt.copy_views)."""
        if self.views is None:
            return []
        names = {t.get("function", {}).get("name") for t in tools or []}
        return self.views(text, bool(tools), patches=PATCH_TOOL in names)

    def _text_constraint(self, request: ChatRequest, tools: list[dict] | None) -> Any:
        """The JSON reply's grammar; None where the model may call a tool instead (a call is
        not JSON text: the format is then asked of the model, not enforced)."""
        fmt = request.text_format or {}
        if tools and self.has_tools:
            log.info("request %s: text.format not enforced beside tools", request.request_id)
            return None
        return plan_text(
            self.tokenizer, fmt["schema"], strict=bool(fmt.get("strict")), name=fmt.get("name", "")
        )

    def _check_call_budget(self, request: ChatRequest, constraint: Any, prompt: int) -> None:
        """A forced call that cannot fit the reply's budget is a 400 naming the smallest budget
        that fits, never a call cut to invalid input."""
        limits = [(request.max_tokens, "max_tokens {}")]
        limits.append((self.max_output_tokens, "the worker's --max-output-tokens {}"))
        if self.context_length:
            limits.append((self.context_length - prompt, "the {} tokens the context has left"))
        budget, said = min((n, text) for n, text in limits if n)
        smallest = constraint.smallest_reply()
        if budget < smallest:
            choice = request.tool_choice
            what = "a call" if choice == "required" else f"a {choice} call"
            raise BadRequest(
                f"{said.format(budget)} is too small for the forced tool_choice: {what} takes "
                f"at least {smallest} tokens",
                param="max_tokens",
            )

    def _turn_start(self, text: str, tokens: list[int], kwargs: dict, switch: dict) -> int:
        """Where the generation prompt begins in `tokens` (0: not found where it should be)."""
        probe = [{"role": "user", "content": ""}]
        try:
            rendered = [
                self.tokenizer.apply_chat_template(
                    probe, tokenize=False, add_generation_prompt=opening, **kwargs, **switch
                )
                for opening in (False, True)
            ]
        except Exception:  # a template that rejects the probe: the prompt's end checkpoint
            return 0
        without, with_opening = rendered
        opening = with_opening.removeprefix(without)
        if not opening or opening == with_opening or not text.endswith(opening):
            return 0
        ids = self.encoder.encode(opening)
        return len(tokens) - len(ids) if ids and tokens[-len(ids) :] == ids else 0

    def _system_len(
        self, messages: list[dict], kwargs: dict, tokens: list[int], switch: dict
    ) -> int:
        """How many leading tokens the system message and tools alone render to (0: none)."""
        head = messages[:1] if messages[0]["role"] == "system" else []
        if not head and not kwargs:
            return 0
        # An empty user turn after it: many templates (Qwen3's) refuse a prompt without one,
        # some (Gemma's) put the system text inside it; the shared prefix is what counts.
        probe = [*head, {"role": "user", "content": ""}]
        try:
            text = self.tokenizer.apply_chat_template(probe, tokenize=False, **kwargs, **switch)
        except Exception:  # a template that rejects even that: no system checkpoint
            return 0
        ids = self.encoder.encode(text)
        n = next((i for i, (a, b) in enumerate(zip(ids, tokens, strict=False)) if a != b), None)
        return min(len(ids), len(tokens)) if n is None else n
