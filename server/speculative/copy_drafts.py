"""Copy drafts (prompt lookup): where the context's latest tokens occurred before, the tokens that
followed them then are the guess for what follows now. An `Edit`'s old_string, a rewritten file,
a repeated identifier: the text a coding agent writes is largely in its context already.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_MATCH = 2  # a single repeated token predicts too little to be worth a verify
MAX_MATCH = 32  # longer matches choose among occurrences; past this they all agree
NOT_A_TOKEN = -1  # stands in the context where no token is (an image): never matched or drafted


class CopyDrafts:
    """The continuation of the longest match of the context's suffix, the latest such match on
    ties (numpy scans: a 30K-token context costs tens of microseconds per proposal)."""

    name = "copy"
    free = True
    longest = 16  # a forced verify's length: policy.CANDIDATES' largest

    def __init__(
        self,
        tokens: list[int],
        min_match: int = MIN_MATCH,
        max_match: int = MAX_MATCH,
        views: Sequence[Sequence[int]] = (),
    ):
        """`views`: more text to copy from, ahead of the context (the prompt's pieces as the model
        writes them back: server.prompt.copy_views); no draft runs from one into the next."""
        self.min_match, self.max_match = min_match, max_match
        size = len(tokens) + sum(len(v) + 1 for v in views)
        self._buf = np.zeros(max(64, 2 * size), dtype=np.int64)
        self._n = 0
        self.matched = 0  # the last proposal's match length (0: no guess)
        for view in views:
            self.extend([*view, NOT_A_TOKEN])
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        if self._n + len(tokens) > len(self._buf):
            grown = np.zeros(2 * (self._n + len(tokens)), dtype=np.int64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : self._n + len(tokens)] = tokens
        self._n += len(tokens)

    def propose(self, k: int) -> list[int]:
        n, ctx = self._n, self._buf[: self._n]
        self.matched = 0
        if k <= 0 or n <= self.min_match:
            return []
        # Occurrences of the last token, before it, with a token after them.
        ends = np.flatnonzero(ctx[: n - 1] == ctx[n - 1])
        length = 1
        while length < self.max_match and ends.size:
            back = ends - length
            ok = back >= 0
            ok[ok] = ctx[back[ok]] == ctx[n - 1 - length]
            if not ok.any():
                break
            ends, length = ends[ok], length + 1
        if length < self.min_match or not ends.size:
            return []
        start = int(ends[-1]) + 1  # the latest of the longest matches
        draft = ctx[start : min(start + k, n)].tolist()
        self.matched = length
        return draft[: draft.index(NOT_A_TOKEN)] if NOT_A_TOKEN in draft else draft

    def propose_after(self, guesses: list[int], k: int) -> list[int]:
        """Up to `k` tokens that may follow the context and then `guesses` (not kept after)."""
        n = self._n
        self.extend(guesses)
        try:
            return self.propose(k)
        finally:
            self._n = n

    def __len__(self) -> int:
        return self._n
