"""Who runs next while sequences decode and prompts wait to prefill: turns of at most a slice.

Decode steps and prefill chunks interleaved one for one stretch every reply over the prefills
around it (a 16-token reply spanned seconds of others' chunks). In turns, replies decode in
bursts, together, and prompts prefill together in between; neither side waits more than one
slice while the other has work, and each side has the whole machine when the other has none.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE_S = 1.0  # at most this long for one side while the other waits (plus one chunk or step)
DECODE, PREFILL = "decode", "prefill"


class TimeSlices:
    """The current turn and since when it runs; the scheduler asks before each step."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, slice_s: float = SLICE_S):
        self.clock = clock
        self.slice_s = slice_s
        self.turn = DECODE
        self.since = clock()

    def next(self, decoding: bool, prefilling: bool) -> str | None:
        """DECODE, PREFILL or None (no work). The turn passes when its side has no work left, or
        when its slice is over and the other side has work."""
        wants = {DECODE: decoding, PREFILL: prefilling}
        other = PREFILL if self.turn == DECODE else DECODE
        over = not wants[self.turn] or self.clock() - self.since >= self.slice_s
        if over and wants[other]:
            self.turn, self.since = other, self.clock()
        return self.turn if wants[self.turn] else None
