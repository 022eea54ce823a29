"""A lone sequence decodes on its own cache, as one request alone does (generation thread only).

Joining mlx-lm's batch copies the prompt's whole KV state into the batch's padded cache and
decodes through the batch's attention: at one sequence that costs TTFT and speed for nothing.
So the first sequence decodes alone in mlx-lm's `GenerationBatch` over its own plain cache, and
moves into the batch, state and all, only when a second one is ready to join.

Alone, it may also draft (server.speculative): a step then verifies the pending token and its
drafts in one forward and gives every accepted token. Plain steps stay in the GenerationBatch,
one step ahead; a step that drafts leaves it and a plain step after drafting rebuilds it. Verifies
run one ahead too (server.speculative.pipeline): the next one is queued before a call returns its
tokens, and `close` or `handover` drop a queued one no longer wanted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from server.speculative.pipeline import VerifyPipeline
from server.speculative.rollback import verify_room
from server.speculative.session import Drafting
from server.speculative.verify import Launched

SOLO_UID = -1  # the scheduler's key for the lone sequence (the batch's uids start at 0)
_NO_LIMIT = 1 << 62  # length and stop tokens are checked here: the batch never finishes it


@dataclass
class SoloResponse:
    """The fields of mlx-lm's batch response the scheduler reads."""

    uid: int
    token: int
    finish_reason: str | None
    prompt_cache: list[Any] | None


class SoloDecode:
    """One sequence's decode on its own cache, one step ahead like mlx-lm's generators."""

    def __init__(
        self,
        model: Any,
        cache: list[Any],
        tokens: list[int],
        start: int,
        *,
        max_tokens: int,
        sampler: Any,
        logits_processors: list[Any],
        stop_sequences: Any,
        drafting: Drafting | None = None,
    ):
        """`tokens[:start]` is in `cache`; the rest (the prompt's last token) starts the decode."""
        import mlx.core as mx
        from mlx_lm.generate import generation_stream

        self.model = model
        self.cache = cache
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.logits_processors = logits_processors
        self.stop_sequences = stop_sequences
        self.drafting = drafting
        self.count = 0
        self._matcher = stop_sequences.matcher()
        self._mx, self._stream = mx, generation_stream  # per token: no imports on that path
        # Plain: the GenerationBatch. Drafting: the verify pipeline (the verify queued).
        self._verifies = (
            VerifyPipeline(model, cache, drafting, sampler, logits_processors)
            if drafting is not None
            else None
        )
        # The last step: its start, tokens fed (0: a switch, not a size to cost), context, whether
        # it counts as drafting (switches do) and the tokens it gave.
        self._cycle: tuple[float, int, int, bool, int] | None = None
        self._returned = 0.0  # when the last call returned (its tokens' handling began)
        self._steady = True  # plain steps run one step ahead (not just back from drafting)
        # Set by the scheduler: others wait to prefill or join, so this one decodes plainly (a
        # verify cycle would hold them up, and the batch they form decodes plainly anyway).
        self.others_waiting = False
        self._batch: Any = None
        self._plain(mx.array(tokens[start:]), list(tokens[:start]))

    def _plain(self, inputs: Any, fed: list[int]) -> None:
        """Decode one step ahead in a GenerationBatch that feeds `inputs` first."""
        from mlx_lm.generate import GenerationBatch, StopSequences

        with self._mx.stream(self._stream):  # where mlx-lm's generators run; the first step too
            self._batch = GenerationBatch(
                self.model,
                [SOLO_UID],
                inputs,
                self.cache,
                [fed],
                [self.sampler],
                self.sampler,
                [list(self.logits_processors)],
                [StopSequences()],
                [_NO_LIMIT],
            )

    def next(self) -> list[SoloResponse]:
        """The next tokens: one from a plain step (the step after it is already queued), the
        pending one and the accepted drafts from a verify (the next verify already queued)."""
        started = time.perf_counter()
        if self.drafting is not None and self._cycle is not None:
            self.drafting.cycle(*self._cycle, started, started - self._returned)
        if self._verifies is not None and self._verifies.launched is not None:
            out = self._settle(started)
        else:
            out = self._plain_step(started)
        self._returned = time.perf_counter()
        return out

    def _plain_step(self, started: float) -> list[SoloResponse]:
        with self._mx.stream(self._stream):  # where mlx-lm's generators run
            (r,) = self._batch.next()
        if self.count % 256 == 255:
            self._mx.clear_cache()  # as mlx-lm's generate_step: freed buffers do not pile up
        response = self._response(int(r.token))
        if self.drafting is not None and response.finish_reason is None:
            self.drafting.delivered([response.token])
            context = len(self._batch.tokens[0])
            steady, self._steady = self._steady, True
            leaving = (
                not self.others_waiting
                and self.drafting.guessing
                and self.drafting.length(context + 1, self._limit())
            )
            plain = steady and not leaving  # a switch's cost is drafting's
            out = [response]
            if leaving and (back := self._leave_batch()) is not None:
                out.append(back)
            self._cycle = (started, 1 if plain else 0, context, not plain, len(out))
            return out
        return [response]

    def _limit(self) -> int:
        """The most drafts the next step may verify: the reply's room after the pending token,
        and what the cache can undo."""
        room = verify_room(self.cache)
        limit = self.max_tokens - self.count - 1
        return limit if room is None else min(limit, room - 1)

    def _leave_batch(self) -> SoloResponse | None:
        """Take the pending token and the fed tokens out of the GenerationBatch and queue the
        first verify; when none is worth it, the pending token's response (plain again)."""
        batch, verifies = self._batch, cast(VerifyPipeline, self._verifies)
        context = batch._token_context[0] if self.logits_processors else None
        verifies.take(cast(int, batch._next_tokens.item()), batch.tokens[0], context)
        self._batch = None
        with self._mx.stream(self._stream):
            return None if verifies.launch(self._limit()) else self._rejoin()

    def _settle(self, started: float) -> list[SoloResponse]:
        """The queued verify's tokens; the next verify queued before they are handled, or
        plain steps again from the token after them."""
        verifies = cast(VerifyPipeline, self._verifies)
        out: list[SoloResponse] = []

        def deliver(token: int) -> bool:
            out.append(self._response(token))
            return out[-1].finish_reason is not None

        with self._mx.stream(self._stream):
            fed = len(cast(Launched, verifies.launched).fed)
            step, context = verifies.settle(deliver)
            if step.pending is not None:
                if self.others_waiting:  # a verify would hold them up: plain from here
                    cast(Drafting, self.drafting).delivered([step.pending])
                    out.append(self._rejoin())
                elif not verifies.launch(self._limit()):
                    out.append(self._rejoin())
        if self.count // 256 != (self.count - len(out)) // 256:
            self._mx.clear_cache()  # as on plain steps: freed buffers do not pile up
        self._cycle = (started, step.drafted and fed, context, True, len(out))
        return out

    def _rejoin(self) -> SoloResponse:
        """A plain step from drafting: the pending token is delivered and fed, one step ahead."""
        pending, fed = cast(VerifyPipeline, self._verifies).leave()
        self._plain(self._mx.array([pending]), fed)
        self._steady = False  # the next plain step waits for this one's forward
        return self._response(pending)

    def close(self) -> list[Any]:
        """The reply ended on a token handed out (or was cancelled): the cache, a queued verify
        undone, holding what it held after the last tokens delivered; drafting ends."""
        if self._verifies is not None:
            self._verifies.drop()
        if self.drafting is not None:
            self.drafting.close()
        return self.cache

    def handover(self) -> tuple[SoloResponse, dict]:
        """Stop decoding alone: the token already sampled ahead, and what the batch needs to go on
        from it (the cache holds every token fed so far; that token is fed next)."""
        if self._batch is not None:
            # Sampled by the last step, not delivered yet (mlx types item() wider than a token id).
            token = cast(int, self._batch._next_tokens.item())
            fed = list(self._batch.tokens[0])
        else:
            token, fed = cast(VerifyPipeline, self._verifies).leave()
            fed = list(fed)
        if self.drafting is not None:  # the batch never drafts
            self.drafting.close()
        response = self._response(token)
        joining = {  # BatchGenerator.insert's arguments for this one sequence
            "prompts": [[token]],
            "max_tokens": [self.max_tokens - self.count],
            "caches": [self.cache],
            "all_tokens": [fed],
            "samplers": [self.sampler],
            "logits_processors": [self.logits_processors],
            "stop_sequences": [self.stop_sequences],
        }
        return response, joining

    def _response(self, token: int) -> SoloResponse:
        self.count += 1
        reason = "length" if self.count >= self.max_tokens else None
        if self._matcher.advance(token):
            reason = "stop"
        return SoloResponse(SOLO_UID, token, reason, self.cache if reason else None)
