"""When a prompt waits for another's prefill instead of computing the same state (logic only)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from server.engine.prefill_task import MIN_SHARED, PrefillTask

CACHED = 1000  # the prefilling prompt's tokens found in the prefix cache


def prefilling(tokens: list[int], stops: list[int]) -> PrefillTask:
    job = SimpleNamespace(rendered=SimpleNamespace(tokens=tokens))
    run = SimpleNamespace(n_cached=CACHED)
    end = len(tokens) - 1
    return PrefillTask(cast(Any, job), cast(Any, run), 8, 0, end, stops, pos=CACHED)


def test_a_prompt_waits_only_where_the_shared_prefix_runs_far_past_the_cached_part():
    system = list(range(CACHED + 2))  # cached but for its last tokens
    task = prefilling([*system, 7, 7, 7], stops=[CACHED + 4])
    # Sessions at once differ a few tokens past the cached system prompt ("session 13" and
    # "session 14" share "1"): prefilling those tokens twice beats waiting out a whole prefill.
    assert task.shares_unfinished([*system, 7, 8]) == 0
    assert task.shares_unfinished(system[:CACHED]) == 0
    # An identical retry, or a prompt sharing a long uncached stretch, waits for its state.
    long_turn = [*system, *range(5000, 5000 + MIN_SHARED)]
    longer = prefilling([*long_turn, 1], stops=[len(long_turn)])
    assert longer.shares_unfinished([*long_turn, 2]) == len(long_turn)
    assert longer.shares_unfinished([*long_turn, 1]) == len(long_turn) + 1
    # Once the state it would start from is stored, nothing is left to wait for.
    longer.stored.add(len(long_turn))
    assert longer.shares_unfinished([*long_turn, 2]) == 0
