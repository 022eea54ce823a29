"""The batch's decode figures for /v1/status: recent tok/s, the peak batch, the decode's own
speed (seconds inside decode steps, not the replies' handling)."""

from __future__ import annotations

import collections
import time

RATE_WINDOW_S = 5.0


class DecodeMeter:
    def __init__(self) -> None:
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self.peak_batch = 0  # the most sequences decoded in one step since start
        self.seconds = 0.0  # inside decode steps since start
        self.tokens = 0

    def step(self, tokens: int, seconds: float, sequences: int | None = None) -> None:
        """One decode step gave `tokens` tokens in `seconds` (one per sequence, unless a lone
        one's verify step gave several)."""
        self.seconds += seconds
        self.tokens += tokens
        if not tokens:
            return
        now = time.monotonic()
        self.peak_batch = max(self.peak_batch, tokens if sequences is None else sequences)
        self._rate.append((now, tokens))
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()

    def status(self) -> dict:
        """Plain values, safe to read from any thread."""
        now = time.monotonic()
        recent = [n for t, n in list(self._rate) if now - t <= RATE_WINDOW_S]
        return {
            "peak_batch_size": self.peak_batch,
            "tokens_per_second": round(sum(recent) / RATE_WINDOW_S, 1),
            "decode_tokens": self.tokens,
            "decode_seconds": round(self.seconds, 3),
        }
