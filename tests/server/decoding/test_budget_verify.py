"""The reasoning budget's batch path: a verify's positions at once give plain decoding's forced
tokens, and after `commit` the budget holds the state plain decoding leaves."""

from __future__ import annotations

import pytest

from server.decoding.reasoning_budget import LazyReasoningBudget, ReasoningBudget
from server.speculative.positions import accept

VOCAB = 16
START, WRONG = 8, 15
# What the model would write: reasoning, the budget cuts it, an answer, a second think block.
SCRIPT = [1, 2, 3, 4, 5, 6, 7, 1, 2, START, 3, 4, 5, 1, 2, 3]


def budget(kind: str, end: tuple[int, ...]):
    if kind == "lazy":
        return LazyReasoningBudget(4, START, end[0], True)
    return ReasoningBudget(4, (START,), end, True)


def state(p) -> tuple:
    if isinstance(p, LazyReasoningBudget):
        return bool(p.reasoning.item()), int(p.used.item()), p.calls
    return p.reasoning, p.used, list(p.forcing), p.calls, list(p._tail)


def row(step: int):
    """The model's logits at a step: its script's token likeliest."""
    import mlx.core as mx

    return (mx.arange(VOCAB) == SCRIPT[step % len(SCRIPT)]).astype(mx.float32)[None]


def plain(kind: str, end: tuple[int, ...]):
    import mlx.core as mx

    p = budget(kind, end)
    tokens, states = [0], []
    for step in range(len(SCRIPT)):
        out = p(mx.array(tokens), row(step))
        states.append(state(p))
        tokens.append(int(mx.argmax(out, axis=-1).item()))
    return tokens[1:], states


@pytest.mark.parametrize(
    "kind, end", [("lazy", (9,)), ("host", (9,)), ("host", (9, 10))], ids=["lazy", "host", "two"]
)
def test_a_verify_at_once_leaves_the_budget_as_plain_decoding_does(kind, end):
    import mlx.core as mx

    out, states = plain(kind, end)
    assert any(t in end for t in out)  # the budget cut the reasoning
    p = budget(kind, end)
    p(mx.array([0]), row(0))
    step, i, rolled = 1, 0, 0
    while step < len(out):
        k = 2 + i % 4
        drafts = out[step : step + k]
        if i % 2 and drafts:
            drafts[i % len(drafts)] = WRONG  # a wrong draft: the rest is rolled back
        fed = [out[step - 1], *drafts][: len(out) - step]
        rows = p.process_many(fed, mx.concatenate([row(step + j) for j in range(len(fed))]))
        sampled = mx.argmax(rows, axis=-1).tolist()
        _, _, shown = accept(fed, sampled, lambda token: False)
        p.commit(shown)
        rolled += shown < len(fed)
        assert sampled[:shown] == out[step : step + shown]
        assert state(p) == states[step + shown - 1], (i, fed)
        step, i = step + shown, i + 1
    assert rolled > 1
