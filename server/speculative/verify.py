"""One verify step: the pending token and `k` drafts go through the model in one forward; each
position's token is sampled as plain decoding would sample it, and drafts count while they match
(server.speculative.positions).

Sampling the model's own choice and accepting a draft only where it equals it is the standard
speculative-sampling rule for a deterministic draft (q a point mass on d): d is accepted with
probability p(d), and a rejection leaves a token drawn from p without d, renormalised. Greedy
decoding is its special case (argmax equality). Logits processors leave the state plain decoding
leaves: those with a batch path roll back what the rejected drafts did, the others only ever see
accepted tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.decoding.processors import all_at_once
from server.model.mtp import logits_and_hidden
from server.speculative import positions
from server.speculative.rollback import Checkpoint


@dataclass
class Verified:
    delivered: list[int]  # the tokens the step gives, in order; the cache now holds them
    pending: int | None  # the token sampled after them (None: the reply ended inside)
    drafted: int
    accepted: int  # drafts among `delivered`
    rerun: bool  # the accepted tokens ran again (a hybrid's recurrent state saw a rejection)
    forward_s: float = 0.0  # the forward and the sampling the host waited for
    positions_s: float = 0.0  # the host's work on the positions (processors too), the rollback


def verify(
    model: Any,
    cache: list[Any],
    pending: int,
    drafts: list[int],
    *,
    sampler: Any,
    processors: list[Any],
    context: Any,
    deliver: Callable[[int], bool],
    hidden_to: Callable[[Any, list[int], int | None], None] | None = None,
) -> Verified:
    """Feed `[pending, *drafts]`, deliver the pending token and the accepted drafts through
    `deliver` (True: the reply ends on that token), and roll the cache back to them.

    `context` is an mlx-lm TokenBuffer of the tokens fed before (None without processors).
    `hidden_to` (an MTP source's) gets the same forward's last hidden states, the delivered
    tokens and the next one: the rejected positions' rows are never read."""
    import mlx.core as mx

    began = time.perf_counter()
    fed = [pending, *drafts]
    checkpoint = Checkpoint(cache)
    hidden = None
    if hidden_to is None:
        logits = model(mx.array([fed]), cache=cache)[0]
    else:
        out, hidden = logits_and_hidden(model, mx.array([fed]), cache)
        logits = out[0]
    mx.async_eval(logits)  # the forward runs while the processors mask the positions
    count = positions.at_once if all_at_once(processors) else positions.one_by_one
    counted = count(
        logits, fed, sampler=sampler, processors=processors, context=context, deliver=deliver
    )
    sampled = time.perf_counter()
    delivered, nxt = counted.delivered, counted.pending
    if hidden_to is not None:
        hidden_to(hidden, delivered, nxt)
    rerun = checkpoint.keep(model, fed, len(delivered))
    done = time.perf_counter()
    step = Verified(delivered, nxt, len(drafts), len(delivered) - 1, rerun)
    step.forward_s = sampled - began - counted.host_s
    step.positions_s = counted.host_s + (done - sampled)
    return step
