"""One verify step: the pending token and `k` drafts go through the model in one forward; each
position's token is sampled as plain decoding would sample it, and drafts count while they match.

Sampling the model's own choice and accepting a draft only where it equals it is the standard
speculative-sampling rule for a deterministic draft (q a point mass on d): d is accepted with
probability p(d), and a rejection leaves a token drawn from p without d, renormalised. Greedy
decoding is its special case (argmax equality). Logits processors run position by position and
only on tokens that were accepted, so each sees the reply as if decoded one token at a time and
none ever needs rolling back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.model.mtp import logits_and_hidden
from server.speculative.rollback import Checkpoint


@dataclass
class Verified:
    delivered: list[int]  # the tokens the step gives, in order; the cache now holds them
    pending: int | None  # the token sampled after them (None: the reply ended inside)
    drafted: int
    accepted: int  # drafts among `delivered`
    rerun: bool  # the accepted tokens ran again (a hybrid's recurrent state saw a rejection)
    forward_s: float = 0.0  # the forward, to its logits
    positions_s: float = 0.0  # sampling each position, the processors and the rollback


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
    mx.eval(logits)  # here the forward is done: what follows is the positions' (timed apart)
    forwarded = time.perf_counter()
    chosen = None if processors else _sample_all(sampler, logits)
    delivered: list[int] = []
    nxt: int | None = None
    for i, token in enumerate(fed):
        delivered.append(token)
        if deliver(token):
            nxt = None
            break
        if chosen is not None:
            nxt = chosen[i]
        else:
            tokens = context.update_and_fetch(mx.array([token]))
            row = logits[i : i + 1]
            for processor in processors:
                row = processor(tokens, row)
            nxt = int(sampler(row - mx.logsumexp(row, axis=-1, keepdims=True)).item())
        if i == len(drafts) or nxt != drafts[i]:
            break
    if hidden_to is not None:
        hidden_to(hidden, delivered, nxt)
    rerun = checkpoint.keep(model, fed, len(delivered))
    done = time.perf_counter()
    step = Verified(delivered, nxt, len(drafts), len(delivered) - 1, rerun)
    step.forward_s, step.positions_s = forwarded - began, done - forwarded
    return step


def _sample_all(sampler: Any, logits: Any) -> list[int]:
    """Every position's token at once (one sync): no processor depends on the ones before."""
    import mlx.core as mx

    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return [int(t) for t in sampler(logprobs).tolist()]
