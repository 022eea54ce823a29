"""What a draft source is: given the tokens so far, up to `k` guesses at the next ones.

Copy drafts (prompt lookup) cost no model; MTP heads and a draft model will plug in here too.
"""

from __future__ import annotations

from typing import Protocol

MODES = ("auto", "off", "copy")  # --speculative; "mtp" and "draft" are refused for now
LATER = ("mtp", "draft")


class DraftSource(Protocol):
    name: str

    def extend(self, tokens: list[int]) -> None:
        """The context grew by `tokens` (fed or about to be fed, in order)."""

    def propose(self, k: int) -> list[int]:
        """Up to `k` tokens that may follow the context (empty: no guess)."""
