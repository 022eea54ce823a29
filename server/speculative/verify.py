"""One verify step: the pending token and `k` drafts go through the model in one forward; each
position's token is sampled as plain decoding would sample it, and drafts count while they match
(server.speculative.positions).

Sampling the model's own choice and accepting a draft only where it equals it is the standard
speculative-sampling rule for a deterministic draft (q a point mass on d): d is accepted with
probability p(d), and a rejection leaves a token drawn from p without d, renormalised. Greedy
decoding is its special case (argmax equality). Logits processors leave the state plain decoding
leaves: those with a batch path roll back what the rejected drafts did, the others only ever see
accepted tokens.

A step is launched (its forward queued on the device) and settled apart, so the host may do other
work while the device runs it (server.speculative.pipeline); a launched step that is not wanted
any more is dropped, the cache left as before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # Where its seconds went: the graph's build (Python), queueing it (MLX encodes the kernels:
    # on the CPU it runs part of the work there), the host's wait for the device, the host's
    # work on the positions (processors too), the rollback.
    split: dict[str, float] = field(default_factory=dict)


class Launched:
    """A verify whose forward is queued: the cache already holds `fed` until it is settled."""

    def __init__(self, model: Any, cache: list[Any], pending: int, drafts: list[int], hidden: bool):
        import mlx.core as mx

        began = time.perf_counter()
        self.model, self.cache = model, cache
        self.fed = [pending, *drafts]
        self.drafts = drafts
        self.checkpoint = Checkpoint(cache)
        self.hidden = None
        if hidden:
            out, self.hidden = logits_and_hidden(model, mx.array([self.fed]), cache)
            self.logits = out[0]
        else:
            self.logits = model(mx.array([self.fed]), cache=cache)[0]
        built = time.perf_counter()
        mx.async_eval(self.logits)  # the device runs it while the host goes on
        self.build_s, self.queue_s = built - began, time.perf_counter() - built

    def settle(
        self,
        *,
        sampler: Any,
        processors: list[Any],
        context: Any,
        deliver: Callable[[int], bool],
        hidden_to: Callable[[Any, list[int], int | None], None] | None = None,
    ) -> Verified:
        """Deliver the pending token and the accepted drafts through `deliver` (True: the reply
        ends on that token), and roll the cache back to them.

        `context` is an mlx-lm TokenBuffer of the tokens fed before (None without processors).
        `hidden_to` (an MTP source's) gets the forward's last hidden states, the delivered
        tokens and the next one: the rejected positions' rows are never read."""
        count = positions.at_once if all_at_once(processors) else positions.one_by_one
        counted = count(
            self.logits,
            self.fed,
            sampler=sampler,
            processors=processors,
            context=context,
            deliver=deliver,
        )
        delivered, nxt = counted.delivered, counted.pending
        if hidden_to is not None:
            hidden_to(self.hidden, delivered, nxt)
        began = time.perf_counter()
        rerun = self.checkpoint.keep(self.model, self.fed, len(delivered))
        step = Verified(delivered, nxt, len(self.drafts), len(delivered) - 1, rerun)
        step.split = {
            "build": self.build_s,
            "queue": self.queue_s,
            "wait": counted.wait_s,
            "positions": counted.host_s,
            "rollback": time.perf_counter() - began,
        }
        return step

    def drop(self) -> None:
        """Undo the queued forward: the cache holds what it held before the launch."""
        self.checkpoint.keep(self.model, self.fed, 0)


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
    """Feed `[pending, *drafts]` and settle it at once (Launched.settle)."""
    launched = Launched(model, cache, pending, drafts, hidden=hidden_to is not None)
    return launched.settle(
        sampler=sampler,
        processors=processors,
        context=context,
        deliver=deliver,
        hidden_to=hidden_to,
    )
