"""MTP drafts: the model's own multi-token-prediction head guesses the token after the pending
one from the model's last hidden state, which each verify forward hands it; copy drafts extend
that guess (the continuation of the context's longest match, the guess included), and where the
context has no match the head chains its own guesses a little further. Where the copies' own
first guess differs from the head's, the one right more often lately on this reply leads (a
verify is one line of tokens: only one of them can be checked).

The head keeps a KV cache of its own over the pairs (hidden state, next token) of the positions
verified since it began: positions that plain steps decoded have no hidden state here, so after
them it starts again from an empty cache (its attention is relative: positions need no offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from server.speculative.copy_drafts import CopyDrafts

MTP_CHAIN = 2  # the head's own guesses per step where no copy extends them (it is trained for 1)
LONGEST = 8  # a forced verify's length: the head's guess and copies after it
_DECAY = 0.8  # per split: the last several count


class MTPDrafts:
    """The draft source over one request's context (generation thread only)."""

    name = "mtp"
    free = False  # a guess costs a head forward: plain steps ask for none
    reads_hidden = True  # verify steps hand it the model's hidden states
    longest = LONGEST

    def __init__(
        self,
        head: Any,
        tokens: list[int],
        chain: int = MTP_CHAIN,
        views: Sequence[Sequence[int]] = (),
    ):
        """`views`: more text the copies read (server.prompt.copy_views)."""
        self.head = head
        self.chain = chain
        self.copies = CopyDrafts(tokens, views=views)
        self.cache = head.make_cache()
        self._feed: tuple[Any, list[int]] | None = None  # pairs the head has not read yet
        self._ready_at: int | None = None  # the context length the feed leads up to
        self._guessed = 0  # cache entries of the last chain (its own guesses): dropped next
        self._split: tuple[int, int] | None = None  # (head's, copies') first guesses, unequal
        self.wins = {"head": 1.0, "copies": 0.0}  # decayed counts of who was right on a split

    def extend(self, tokens: list[int]) -> None:
        self.copies.extend(tokens)

    @property
    def primed(self) -> bool:
        """Whether it holds the hidden state of the context's last position but one (the
        pending token's input): else a verify of no drafts must hand it one first."""
        return self._ready_at == len(self.copies)

    def observe(self, hidden: Any, delivered: list[int], pending: int | None) -> None:
        """A verify gave `delivered` (from the pending token on, which ends the context now) and
        sampled `pending` after them; hidden[0, i] is the model's state after delivered[i]."""
        from mlx_lm.models.cache import trim_prompt_cache

        if self._split is not None and self.primed:  # the model's token after the pending one
            actual = delivered[1] if len(delivered) > 1 else pending
            for who, guess in zip(("head", "copies"), self._split, strict=True):
                self.wins[who] = _DECAY * self.wins[who] + (guess == actual)
        self._split = None
        if pending is None:
            self._feed, self._ready_at = None, None
            return
        if not self.primed:  # plain steps came between: their positions have no hidden state
            self.cache = self.head.make_cache()
        elif self._guessed:
            trim_prompt_cache(self.cache, self._guessed)
        self._guessed = 0
        n = len(delivered)
        self._feed = (hidden[:, :n], [*delivered[1:], pending])
        self._ready_at = len(self.copies) + n

    def propose(self, k: int) -> list[int]:
        import mlx.core as mx

        if k <= 0 or not self.primed or self._feed is None:
            return []
        hidden, tokens = self._feed
        self._feed = None
        logits, out = self.head(hidden, mx.array([tokens]), self.cache)
        guess = cast(int, logits[0, -1].argmax().item())  # mlx types item() wider than an id
        copied = self.copies.propose(k)
        if copied and copied[0] != guess:
            self._split = (guess, copied[0])
            if self.wins["copies"] > self.wins["head"]:
                return copied
        drafts = [guess, *self.copies.propose_after([guess], k - 1)]
        while len(drafts) < min(k, self.chain):
            logits, out = self.head(out[:, -1:], mx.array([drafts[-1:]]), self.cache)
            self._guessed += 1
            drafts.append(cast(int, logits[0, -1].argmax().item()))
        return drafts

    def __len__(self) -> int:
        return len(self.copies)
