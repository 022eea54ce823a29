"""Split a thinking model's reply into reasoning and answer, with mlx-lm's own machinery.

The think markers come from the tokenizer (`TokenizerWrapper.think_start` / `think_end`, which
mlx-lm infers from the vocabulary), the text splitting from `TextStateMachine`, and the state a
reply starts in from the prompt as `mlx_lm.server` decides it: a template whose generation
prompt opens `<think>` starts the reply in reasoning. Reasoning comes out as ThinkingDelta
events (dropped when the request did not ask to see them); the answer goes on to the
ReplyParser (text, tool calls, stop strings). Runs on the generation thread.
"""

from __future__ import annotations

from typing import Any

from server.decoding.reply_parser import ReplyParser
from server.request import ThinkingDelta

REASONING, ANSWER, CALL = "reasoning", "normal", "tool"


def opens_reasoning(tokenizer: Any, tokens: list[int]) -> bool:
    """Whether the prompt leaves a think block open, so the reply starts in reasoning."""
    if not getattr(tokenizer, "has_thinking", False):
        return False
    initial = getattr(tokenizer, "response_initial_state", None)
    if initial:
        return initial == REASONING
    return tokenizer.rfind_think_start(tokens) > tokenizer.rfind_think_end(tokens)


class ReasoningParser:
    """Feed text segments; reasoning becomes ThinkingDelta, the answer goes to `answer`.

    The newlines the templates put around reasoning (`<think>\\n...\\n</think>\\n\\n`) are not
    part of it: they are dropped, so the text a client sends back renders to what the model wrote.
    """

    def __init__(
        self,
        answer: ReplyParser,
        *,
        start: str,
        end: str,
        call_start: str | None = None,
        reasoning: bool = False,
        show: bool = True,
    ):
        from mlx_lm.generate import TextStateMachine

        transitions = {ANSWER: [(start, REASONING)], REASONING: [(end, ANSWER)], CALL: []}
        if call_start:
            # A call opened inside the reasoning ends it (as mlx-lm's server reads it).
            transitions[REASONING].append((call_start, CALL))
        self.answer = answer
        self.call_start = call_start or ""
        self.show = show
        self.reasoning_tokens = 0  # segments fed while reasoning: one per generated token
        self._machine = TextStateMachine(transitions)
        self._state = self._machine.make_state(REASONING if reasoning else ANSWER)
        self._where = self._state[0]
        self._lead = True  # newlines at the start of a reasoning or an answer are dropped
        self._held = ""  # newlines at the end of the reasoning so far: dropped if it ends

    @property
    def stopped(self) -> str | None:
        return self.answer.stopped

    @property
    def calls(self) -> int:
        return self.answer.calls

    @property
    def reasoning(self) -> bool:
        return self._where == REASONING

    def feed(self, text: str) -> list:
        if self.stopped:
            return []
        if self._where == REASONING:
            self.reasoning_tokens += 1
        self._state, segments = self._machine.split(self._state, text)
        events: list = []
        for where, piece in segments:
            events += self._route(where, piece)
        return events

    def finish(self) -> list:
        self._state, rest, where = self._machine.flush(self._state)
        events = self._route(where, rest) if rest else []
        return events + self.answer.finish()

    def _route(self, where: str, piece: str) -> list:
        events: list = []
        if where != self._where:
            entering_call = where == CALL
            self._where, self._lead, self._held = where, True, ""
            if entering_call:
                self._lead = False
                events += self.answer.feed(self.call_start)
        if where == REASONING:
            return events + self._reasoning(piece)
        if self._lead:
            piece = piece.lstrip()
            self._lead = not piece
        return events + (self.answer.feed(piece) if piece else [])

    def _reasoning(self, piece: str) -> list:
        if self._lead:
            piece = piece.lstrip("\n")
            self._lead = not piece
        piece = self._held + piece
        body = piece.rstrip("\n")
        self._held = piece[len(body) :]
        return [ThinkingDelta(body)] if body and self.show else []


def reply_parser(answer: ReplyParser, tokenizer: Any, rendered: Any) -> Any:
    """`answer` itself for a model that does not think, else a ReasoningParser around it."""
    if not getattr(tokenizer, "has_thinking", False):
        return answer
    return ReasoningParser(
        answer,
        start=tokenizer.think_start,
        end=tokenizer.think_end,
        call_start=tokenizer.tool_call_start if rendered.parse_tools else None,
        reasoning=rendered.reasoning,
        show=rendered.thinking,
    )
