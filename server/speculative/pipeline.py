"""The drafting side of a lone sequence's decode, one verify ahead (generation thread only).

As soon as a verify's tokens and the token after them are known, the next drafts are proposed and
their verify's forward queued, before the tokens go back to be handled: the scheduler's work on
them (detokenizer, parser, events) and the next graph's build overlap the device, as plain
decoding's one step ahead does. A queued verify that is not wanted any more (the reply ended on a
handled token, the sequence moves into the batch, the request is cancelled) is dropped, and the
cache holds what it held before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.speculative.session import Drafting
from server.speculative.verify import Launched, Verified


class VerifyPipeline:
    """The tokens in the cache, the one sampled after them, the verify queued."""

    def __init__(
        self, model: Any, cache: list[Any], drafting: Drafting, sampler: Any, processors: list[Any]
    ):
        self.model, self.cache, self.drafting = model, cache, drafting
        self.sampler, self.processors = sampler, processors
        self.fed: list[int] = []  # the tokens the cache holds (the queued verify's aside)
        self.pending: int | None = None  # sampled after them, not delivered yet
        self.context: Any = None  # the processors' token buffer (mlx-lm's), without a batch path
        self.launched: Launched | None = None
        self._priming = False  # the queued verify has no drafts: it gives an MTP head its state

    def take(self, pending: int, fed: list[int], context: Any) -> None:
        """Go on from plain decoding: `fed` is in the cache, `pending` sampled after it."""
        self.pending, self.fed, self.context = pending, fed, context

    def launch(self, limit: int) -> bool:
        """Propose drafts after the pending token and queue their verify; False: none is worth
        a verify, and the pending token decodes plainly (the source has seen it). `limit`: the
        most drafts the reply and the cache have room for."""
        drafting, pending = self.drafting, self.pending
        assert pending is not None and self.launched is None
        k = drafting.length(len(self.fed) + 1, limit)
        if not k:
            drafting.delivered([pending])
            return False
        drafts = drafting.drafts(pending, k)
        priming = not drafts and drafting.priming
        if not drafts and not priming:
            return False
        self._priming = priming
        self.launched = Launched(
            self.model, self.cache, pending, drafts, hidden=drafting.hidden_to is not None
        )
        return True

    def settle(self, deliver: Callable[[int], bool]) -> tuple[Verified, int]:
        """The queued verify's tokens through `deliver`, and the context length before it."""
        launched, drafting = self.launched, self.drafting
        assert launched is not None
        self.launched = None
        step = launched.settle(
            sampler=self.sampler,
            processors=self.processors,
            context=self.context,
            deliver=deliver,
            hidden_to=drafting.hidden_to,
        )
        if not self._priming:  # a priming step is a plain one: a switch's cost
            drafting.verified(step.delivered[1:], step.drafted, step.split)
        context = len(self.fed)
        self.fed.extend(step.delivered)
        self.pending = step.pending
        return step, context

    def drop(self) -> None:
        """Undo the queued verify, if any: the cache holds `fed` again."""
        if self.launched is not None:
            self.launched.drop()
            self.launched = None

    def leave(self) -> tuple[int, list[int]]:
        """Back to plain decoding: the pending token and the tokens in the cache."""
        self.drop()
        pending, self.pending, self.context = self.pending, None, None
        assert pending is not None
        return pending, self.fed
