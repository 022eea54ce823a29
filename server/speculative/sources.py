"""What a draft source is: given the tokens so far, up to `k` guesses at the next ones.

Copy drafts (prompt lookup) cost no model; a draft model costs its forwards; the model's MTP head
costs one small forward and reads the hidden states each verify hands it (`reads_hidden`).
"""

from __future__ import annotations

from typing import Protocol

MODES = ("auto", "off", "copy", "mtp", "draft")  # --speculative
FORCED = ("copy", "mtp", "draft")  # modes that draft whenever the source guesses, at its longest


class DraftSource(Protocol):
    name: str
    free: bool  # proposing costs nothing: plain steps may check a guess at every token

    @property
    def longest(self) -> int:
        """The drafts a forced mode verifies each step."""

    def extend(self, tokens: list[int]) -> None:
        """The context grew by `tokens` (fed or about to be fed, in order)."""

    def propose(self, k: int) -> list[int]:
        """Up to `k` tokens that may follow the context (empty: no guess)."""
