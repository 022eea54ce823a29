"""One request's drafting: its draft source, its acceptance, the worker's cost model, its record.

The lone-sequence decode asks it, each step, which drafts to verify (none: decode plainly) and
tells it what happened. While decoding plainly it still checks its guesses against the tokens the
model writes, at no cost, so `auto` notices when copying starts paying again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from server.speculative.copy_drafts import CopyDrafts
from server.speculative.guard import OUTLIER, PROBE_EVERY, SLACK, SpeedGuard
from server.speculative.policy import Acceptance, CostModel, choose
from server.speculative.sources import FORCED, DraftSource
from server.speculative.stats import DraftRecord

MOST_PROBE_EVERY = 1024  # a request whose tries keep failing tries at most this seldom
_OWN_DECAY = 0.9  # per drafting cycle: this request's last dozen or so
_OWN_CYCLES = 4  # drafting cycles this request must have before its own speed counts


class Drafting:
    def __init__(
        self,
        mode: str,
        prompt: list[int],
        costs: CostModel,
        guard: SpeedGuard | None = None,
        source: DraftSource | None = None,
        views: Sequence[Sequence[int]] = (),
    ):
        """`mode` is "auto" (the cost model decides, the guard checks), or "copy" or "draft"
        (draft whenever there is a guess, at the source's longest length); `source` holds the
        prompt (copy drafts by default, which also copy from `views`)."""
        self.mode = mode
        self.source: DraftSource = source or CopyDrafts(prompt, views=views)
        self.costs = costs
        self.guard = guard or SpeedGuard()
        self._held = 0  # steps `auto` held drafting off since its last try
        self._probe_every = PROBE_EVERY  # doubles with each try while drafting is held off
        # This request's drafting, decayed seconds and tokens: the worker's guard mixes turns
        # that copy with turns whose drafts keep failing (prose), so each request checks its own.
        self._own = [0.0, 0.0]
        self._own_cycles = 0
        self._probing = False  # a try was granted: the step's second ask must not refuse it
        self.acceptance = Acceptance()
        self.record: DraftRecord = getattr(self.source, "record", None) or DraftRecord(
            self.source.name
        )
        self._guess: int | None = None  # the source's guess at the next token while plain
        self._verifying = False  # the last step verified: drafting on costs no switch

    def delivered(self, tokens: list[int]) -> None:
        """Tokens given by plain steps: check the last guess, then guess the next."""
        self._probing = False
        self._verifying = False
        if not self.source.free:  # a guess would cost a draft forward per plain token
            self.source.extend(tokens)
            return
        for token in tokens:
            if self._guess is not None:
                self.acceptance.observe(int(token == self._guess), 1)
            self.source.extend([token])
            guess = self.source.propose(1)
            self._guess = guess[0] if guess else None

    @property
    def guessing(self) -> bool:
        """Whether the source guesses at the token being decoded (plain steps draft nothing
        else: leaving the one-step-ahead pipeline costs a wait); a model always has one."""
        return self._guess is not None or not self.source.free

    @property
    def hidden_to(self) -> Callable[[Any, list[int], int | None], None] | None:
        """Where a verify hands the model's hidden states (an MTP source's); None: nowhere."""
        return getattr(self.source, "observe", None) if self.reads_hidden else None

    @property
    def reads_hidden(self) -> bool:
        return getattr(self.source, "reads_hidden", False)

    @property
    def priming(self) -> bool:
        """Whether the source has no guess for want of a hidden state: a verify of no drafts
        (a plain step that keeps its hidden states) gives it one."""
        return self.reads_hidden and not getattr(self.source, "primed", True)

    def length(self, context: int, limit: int) -> int:
        """How many drafts the next step should verify (0: decode plainly); `limit` is what
        the reply has room for after the pending token."""
        if limit <= 0:
            return 0
        if self.mode in FORCED:
            return min(self.source.longest, limit)
        if not self._probing:
            if self._held_off(context):
                self._held += 1
                if self._held < self._probe_every:
                    return 0
                self._held, self._probing = 0, True
                self._probe_every = min(2 * self._probe_every, MOST_PROBE_EVERY)
            else:
                self._probe_every = PROBE_EVERY
        entering = not self._verifying
        return choose(self.acceptance.rate, self.costs, context, limit, entering)

    def _held_off(self, context: int) -> bool:
        """Drafting came out slower than plain decoding here: the worker's or this request's."""
        if self.guard.holds_off(context):
            return True
        plain = self.guard.per_token(False, context)
        spent, tokens = self._own
        if plain is None or self._own_cycles < _OWN_CYCLES or not tokens:
            return False
        return spent / tokens * SLACK > plain

    def cycle(
        self,
        began: float,
        fed: int,
        context: int,
        drafting: bool,
        tokens: int,
        now: float,
        handled_s: float = 0.0,
    ) -> None:
        """A decode cycle ended: its cost by tokens fed (0: a switch in or out of drafting,
        no size of its own) and its seconds per token, drafting or plain; `handled_s` of it
        went to the scheduler's handling of its tokens."""
        if fed or drafting:  # fed 0 while drafting: a switch in or out
            self.costs.record(fed, context, now - began)
        if fed > 1:
            self.guard.spent("cycle", now - began)
            self.guard.spent("handling", handled_s)
            if self.costs.first_seen(fed, context):
                return  # on MLX CUDA a size's first verify compiles its kernels: not the speed
        self.guard.record(drafting, context, tokens, now - began)
        if drafting:
            plain = self.guard.per_token(False, context)
            spent = now - began if plain is None else min(now - began, OUTLIER * tokens * plain)
            self._own = [self._own[0] * _OWN_DECAY + spent, self._own[1] * _OWN_DECAY + tokens]
            self._own_cycles += 1

    def drafts(self, pending: int, k: int) -> list[int]:
        """The source's guesses after the pending token (which the next step delivers)."""
        began = time.perf_counter()
        self.source.extend([pending])
        self._guess = None
        drafts = self.source.propose(k)
        self.guard.spent("propose", time.perf_counter() - began)
        return drafts

    def verified(
        self, accepted: list[int], drafted: int, split: dict[str, float] | None = None
    ) -> None:
        """A verify step accepted `accepted` of `drafted` drafts (the rest were wrong); `split`:
        where its seconds went, by part (server.speculative.guard)."""
        for part, seconds in (split or {}).items():
            self.guard.spent(part, seconds)
        if (settled := getattr(self.source, "settled", None)) is not None:
            settled(len(accepted))  # a source that stacks copies measures each one's share
        self.source.extend(accepted)
        self._probing = False
        self._verifying = True
        right = len(accepted)
        self.acceptance.observe(right, right + (1 if right < drafted else 0))
        r = self.record
        r.drafted += drafted
        r.accepted += right
        r.verify_steps += 1
        r.verified_tokens += right + 1

    def close(self) -> None:
        """The reply stopped drafting (it ended, or joined the batch): a source holding state
        worth keeping for later requests (a draft model's cache) gives it back."""
        if (close := getattr(self.source, "close", None)) is not None:
            close()
