"""A lone sequence decodes on its own cache, as one request alone does (generation thread only).

Joining mlx-lm's batch copies the prompt's whole KV state into the batch's padded cache and
decodes through the batch's attention: at one sequence that costs TTFT and speed for nothing.
So the first sequence decodes alone in mlx-lm's `GenerationBatch` over its own plain cache, and
moves into the batch, state and all, only when a second one is ready to join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

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
    ):
        """`tokens[:start]` is in `cache`; the rest (the prompt's last token) starts the decode."""
        import mlx.core as mx
        from mlx_lm.generate import GenerationBatch, StopSequences, generation_stream

        self.cache = cache
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.logits_processors = logits_processors
        self.stop_sequences = stop_sequences
        self.count = 0
        self._matcher = stop_sequences.matcher()
        self._mx, self._stream = mx, generation_stream  # per token: no imports on that path
        with mx.stream(generation_stream):  # where mlx-lm's generators run; the first step too
            self._batch = GenerationBatch(
                model,
                [SOLO_UID],
                mx.array(tokens[start:]),
                cache,
                [list(tokens[:start])],
                [sampler],
                sampler,
                [list(logits_processors)],
                [StopSequences()],
                [_NO_LIMIT],
            )

    def next(self) -> SoloResponse:
        """The next token (the step after it is already queued)."""
        with self._mx.stream(self._stream):  # where mlx-lm's generators run
            (r,) = self._batch.next()
        if self.count % 256 == 255:
            self._mx.clear_cache()  # as mlx-lm's generate_step: freed buffers do not pile up
        return self._response(int(r.token))

    def handover(self) -> tuple[SoloResponse, dict]:
        """Stop decoding alone: the token already sampled ahead, and what the batch needs to go on
        from it (the cache holds every token fed so far; that token is fed next)."""
        # Sampled by the last step, not delivered yet (mlx types item() wider than a token id).
        token = cast(int, self._batch._next_tokens.item())
        response = self._response(token)
        joining = {  # BatchGenerator.insert's arguments for this one sequence
            "prompts": [[token]],
            "max_tokens": [self.max_tokens - self.count],
            "caches": [self.cache],
            "all_tokens": [list(self._batch.tokens[0])],
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
