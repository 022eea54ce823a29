"""A verify's positions: the token each one samples, and which of the fed tokens count.

Position i feeds `fed[i]` (the pending token, then the drafts) and samples the token after it;
the draft `fed[i + 1]` counts while it equals that sample. Where every logits processor has the
batch path (server.decoding.processors), all positions are masked as if every draft counts
(while the forward still runs), sampled with one sync, and each processor keeps what the counted
positions leave. Otherwise processors are shown the positions one at a time, counted ones only,
with a sync each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Counted:
    delivered: list[int]  # the fed tokens given, in order
    pending: int | None  # the token sampled after them (None: the reply ended inside)
    host_s: float  # the host's time on the positions (masks, acceptance, processors)
    wait_s: float  # the host's wait for the forward


def at_once(
    logits: Any,
    fed: list[int],
    *,
    sampler: Any,
    processors: list[Any],
    context: Any,
    deliver: Callable[[int], bool],
) -> Counted:
    """Every position sampled with one sync; `logits` may still be computing. The processors
    are given the fed tokens, not `context` (the token buffer of those without a batch path)."""
    import mlx.core as mx

    began = time.perf_counter()
    rows = logits
    for processor in processors:  # each may stop before a draft it cannot accept
        rows = processor.process_many(fed[: rows.shape[0]], rows)
    masked = time.perf_counter()
    logprobs = rows - mx.logsumexp(rows, axis=-1, keepdims=True)
    sampled = [int(t) for t in sampler(logprobs).tolist()]  # the one sync
    synced = time.perf_counter()
    delivered, pending, shown = accept(fed[: len(sampled)], sampled, deliver)
    for processor in processors:
        processor.commit(shown)
    host = (masked - began) + (time.perf_counter() - synced)
    return Counted(delivered, pending, host, synced - masked)


def one_by_one(
    logits: Any,
    fed: list[int],
    *,
    sampler: Any,
    processors: list[Any],
    context: Any,
    deliver: Callable[[int], bool],
) -> Counted:
    """Each position in turn, its processors shown only counted tokens (a sync per position)."""
    import mlx.core as mx

    waited = time.perf_counter()
    mx.eval(logits)
    began = time.perf_counter()
    delivered: list[int] = []
    pending: int | None = None
    for i, token in enumerate(fed):
        delivered.append(token)
        if deliver(token):
            pending = None
            break
        tokens = context.update_and_fetch(mx.array([token]))
        row = logits[i : i + 1]
        for processor in processors:
            row = processor(tokens, row)
        pending = int(sampler(row - mx.logsumexp(row, axis=-1, keepdims=True)).item())
        if i + 1 == len(fed) or pending != fed[i + 1]:
            break
    return Counted(delivered, pending, time.perf_counter() - began, began - waited)


def accept(
    fed: list[int], sampled: list[int], deliver: Callable[[int], bool]
) -> tuple[list[int], int | None, int]:
    """The tokens delivered, the one sampled after them, and how many positions a processor
    would have been shown decoding plainly (none for a token that ends the reply)."""
    delivered: list[int] = []
    for i, token in enumerate(fed):
        delivered.append(token)
        if deliver(token):
            return delivered, None, i
        if i + 1 == len(fed) or sampled[i] != fed[i + 1]:
            return delivered, sampled[i], i + 1
    raise AssertionError("a verify feeds at least the pending token")
