"""Copies stacked on a draft model: which one leads a proposal, by measured acceptance.

Inside a long match (an `Edit`'s old_string, a rewritten file) copies of the context are free and
usually right, while the draft model costs a forward per guess. Copies lead where their match is
long and their acceptance, counted over the tokens they drafted, is no worse than the model's;
else the model guesses and copies extend its guesses once those continue a long match. A copy
guess the model's proposal passed over is checked against what the model wrote, so copies can
win the lead back.
"""

from __future__ import annotations

from server.speculative.copy_drafts import CopyDrafts
from server.speculative.policy import Acceptance

LONG_MATCH = 4  # context tokens the copies' match must span before they may lead


class CopyLead:
    """One request's choice between copies and the draft model's guesses."""

    def __init__(self) -> None:
        self.rates = {"copy": Acceptance(), "model": Acceptance()}
        self._origins: list[str] = []  # the last proposal's origin, token by token
        self._first = 0  # its first draft
        self._passed: int | None = None  # a long match's first guess the model's proposal passed
        self._truth_for: int | None = None  # that guess, waiting for the token the model wrote

    def leads(self, copies: CopyDrafts, copied: list[int]) -> bool:
        """Whether `copied` (copies.propose's last answer) should lead."""
        return self.long(copies, copied) and self.rates["copy"].rate >= self.rates["model"].rate

    @staticmethod
    def long(copies: CopyDrafts, copied: list[int]) -> bool:
        return bool(copied) and copies.matched >= LONG_MATCH

    def proposed(self, drafts: list[int], origins: list[str], passed: int | None) -> None:
        self._origins, self._passed = origins, passed
        self._first = drafts[0] if drafts else 0
        self._truth_for = None

    def settled(self, accepted: int) -> None:
        """The last proposal's verify accepted its first `accepted` drafts."""
        for origin in ("copy", "model"):
            tried = [i for i, o in enumerate(self._origins) if o == origin and i <= accepted]
            if tried:
                self.rates[origin].observe(sum(i < accepted for i in tried), len(tried))
        passed = self._passed
        if passed is not None:
            if accepted or passed == self._first:  # the first draft's outcome tells
                self.rates["copy"].observe(int(accepted > 0 and passed == self._first), 1)
            else:  # the model's own token, next in the context, tells
                self._truth_for = passed
        self._origins, self._passed = [], None

    def seen(self, tokens: list[int]) -> None:
        """The context grew by `tokens`."""
        if self._truth_for is not None and tokens:
            self.rates["copy"].observe(int(tokens[0] == self._truth_for), 1)
            self._truth_for = None
