"""A thinking budget as a logits processor: past the budget, close the reasoning.

Once `budget` tokens were reasoned, the think-end marker's tokens are forced one by one; then
the model is free again and writes its answer. The reasoning state is followed from the tokens
fed in (the last of `tokens` is the token being fed: the prompt's last on the first call), so it
holds on both decode paths and for templates that open `<think>` themselves or let the model.
A verify step runs every position at once and keeps the state its accepted positions leave.
"""

from __future__ import annotations

from typing import Any

# Room kept for the answer when the client gave no budget, or one that would use it all.
ANSWER_RESERVE = 1024


def budget_for(budget: int | None, max_tokens: int | None) -> int | None:
    """The reasoning budget a request decodes with: its own, capped to leave the answer room."""
    if not max_tokens:
        return budget
    cap = max(1, max_tokens - max(1, min(ANSWER_RESERVE, max_tokens // 4)))
    return min(budget, cap) if budget else cap


def _only(token: int, logits: Any) -> Any:
    """Logits that leave `token` the one choice."""
    import mlx.core as mx

    allowed = mx.arange(logits.shape[-1]) == token
    return mx.where(allowed, mx.zeros_like(logits), mx.full(logits.shape, -mx.inf, logits.dtype))


class _Rewinds:
    """The batch path of a processor whose state is a few values: each position's state is
    kept, and `commit` puts back the one after the accepted positions."""

    _marks: list[tuple]

    def _step(self, token: int, logits: Any) -> Any:
        raise NotImplementedError

    def _state(self) -> tuple:
        raise NotImplementedError

    def _restore(self, state: tuple) -> None:
        raise NotImplementedError

    def process_many(self, fed: list[int], logits: Any) -> Any:
        """A verify's rows, as if every draft is accepted (`fed[i]` is fed at position i)."""
        import mlx.core as mx

        self._marks = []
        rows = []
        for i, token in enumerate(fed):
            self._marks.append(self._state())
            rows.append(self._step(token, logits[i : i + 1]))
        return mx.concatenate(rows)

    def commit(self, kept: int) -> None:
        """A verify kept its first `kept` positions."""
        marks, self._marks = self._marks, []
        if kept < len(marks):
            self._restore(marks[kept])


class LazyReasoningBudget(_Rewinds):
    """Single-token markers (`<think>` / `</think>` in the vocabulary): the state is kept in MLX
    arrays and updated lazily, so no step waits for the token being fed in (decoding runs one
    step ahead; reading the token on the host would stall that pipeline every step)."""

    def __init__(self, budget: int, start: int, end: int, reasoning: bool):
        import mlx.core as mx

        self.budget, self.start, self.end = budget, start, end
        self.reasoning = mx.array(reasoning)
        self.used = mx.array(0)  # reasoning tokens so far
        self.calls = 0

    def __call__(self, tokens: Any, logits: Any) -> Any:
        return self._step(tokens[-1], logits)

    def _step(self, token: Any, logits: Any) -> Any:
        import mlx.core as mx

        self.calls += 1
        if self.calls > 1:  # the first call feeds the prompt's last token, not a reply token
            token = mx.array(token)  # (a verify's positions give it as an int)
            ends = token == self.end
            self.used = self.used + (self.reasoning & ~ends).astype(mx.int32)
            # One budget for the whole reply, however many think blocks it opens.
            self.reasoning = mx.where(ends, False, (token == self.start) | self.reasoning)
        force = self.reasoning & (self.used >= self.budget)
        return mx.where(force, _only(self.end, logits), logits)

    def _state(self) -> tuple:
        return self.reasoning, self.used, self.calls

    def _restore(self, state: tuple) -> None:
        self.reasoning, self.used, self.calls = state


class ReasoningBudget(_Rewinds):
    """Markers of several tokens: followed on the host, token by token."""

    def __init__(self, budget: int, start: tuple[int, ...], end: tuple[int, ...], reasoning: bool):
        self.budget = budget
        self.start, self.end = list(start), list(end)
        self.reasoning = reasoning
        self.used = 0  # reasoning tokens so far
        self.forcing: list[int] = []  # the think-end tokens still to force
        self.calls = 0
        self._tail: list[int] = []  # the last generated tokens, to spot a marker

    def __call__(self, tokens: Any, logits: Any) -> Any:
        return self._step(int(tokens[-1].item()) if self.calls else 0, logits)

    def _step(self, token: int, logits: Any) -> Any:
        self.calls += 1
        if self.calls > 1:  # the first call feeds the prompt's last token, not a reply token
            self._saw(token)
        if not self.forcing and self.reasoning and self.used >= self.budget:
            self.forcing = list(self.end)
        if not self.forcing:
            return logits
        return _only(self.forcing.pop(0), logits)

    def _state(self) -> tuple:
        return self.reasoning, self.used, list(self.forcing), self.calls, list(self._tail)

    def _restore(self, state: tuple) -> None:
        self.reasoning, self.used, forcing, self.calls, tail = state
        self.forcing, self._tail = list(forcing), list(tail)

    def _saw(self, token: int) -> None:
        self._tail = (self._tail + [token])[-max(len(self.start), len(self.end)) :]
        if self._tail[-len(self.end) :] == self.end:
            self.reasoning, self.forcing = False, []
        elif self._tail[-len(self.start) :] == self.start:
            self.reasoning = True  # one budget for the whole reply, however many think blocks
        elif self.reasoning:
            self.used += 1


def budget_factory(
    request: Any, rendered: Any, loaded: Any
) -> LazyReasoningBudget | ReasoningBudget | None:
    """The processor for a model that reasons (None: no budget, or a model that cannot). With
    thinking turned off the budget is 0: a template without an off switch still opens the
    reasoning, and it is closed at once."""
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "has_thinking", False):
        return None
    budget = (
        0 if request.thinking is False else budget_for(request.thinking_budget, request.max_tokens)
    )
    if budget is None:
        return None  # no limit to keep room under: the context bounds it
    start, end = tuple(tokenizer.think_start_tokens), tuple(tokenizer.think_end_tokens)
    if len(start) == len(end) == 1:
        return LazyReasoningBudget(budget, start[0], end[0], rendered.reasoning)
    return ReasoningBudget(budget, start, end, rendered.reasoning)
