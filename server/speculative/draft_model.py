"""A draft model: a small model with the target's tokenizer decodes greedily on its own KV cache
and proposes what it writes. Its cache follows the context lazily: before each proposal it is
trimmed back to the longest prefix it shares with the context (what the verify accepted) and fed
the rest, as mlx-lm's speculative_generate_step keeps its draft cache in step.

A request starts from the draft cache of an earlier one sharing its prefix (server.speculative.
draft_store) and gives its own back at its end, so a conversation's next turn feeds the draft
only its new tokens. Copies of the context are stacked on its guesses (server.speculative.
copy_lead): inside a long match they lead, and the draft model's forwards are saved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

from server.speculative.copy_drafts import NOT_A_TOKEN, CopyDrafts
from server.speculative.copy_lead import CopyLead
from server.speculative.draft_store import DraftCaches
from server.speculative.rollback import Checkpoint, restorable
from server.speculative.stats import DraftRecord

DRAFT_TOKENS = 4  # `--speculative draft` verifies this many each step (k draft forwards)
PREFILL_STEP = 2048  # the draft's prompt runs in chunks of this many tokens

log = logging.getLogger("server.engine")


class DraftModel:
    """The draft source over one request's context (generation thread only)."""

    name = "draft"
    free = False  # each proposal costs draft forwards: plain steps ask for none

    def __init__(
        self,
        model: Any,
        tokens: list[int],
        prefill_step: int | None = None,
        *,
        store: DraftCaches | None = None,
        chain: int | None = None,
        stack: bool = True,
        views: Sequence[Sequence[int]] = (),
    ):
        """Takes `store`'s entry sharing the longest prefix with `tokens` (or a fresh cache) and
        feeds it the rest but the last token (its logits come with the first proposal).
        `chain`: the most guesses of the model per proposal (None: as many as asked); `stack`:
        copies of the context (and of `views`, as copy drafts read them) may lead or extend them."""
        from mlx_lm.models.cache import make_prompt_cache

        self.model = model
        self.prefill_step = prefill_step or PREFILL_STEP
        self.context = list(tokens)
        self.store, self.chain = store, chain
        self.copies = CopyDrafts(self.context, views=views) if stack else None
        self.lead = CopyLead()
        self.record = DraftRecord(self.name)
        self._fresh = lambda: make_prompt_cache(model)
        taken = store.take(self.context) if store is not None else None
        self.cached, self.cache = taken if taken else ([], self._fresh())
        self._whole = True  # the cache holds exactly `cached` (a feed that failed midway: not)
        self.record.draft_reused = len(self.cached)
        if rest := self.context[len(self.cached) : -1]:
            self._feed(rest, logits_wanted=False)
            self.record.draft_prefilled = len(rest)
        self._agreed = len(self.cached)  # leading tokens of `cached` known to be the context's
        self._checkpoint: Checkpoint | None = None  # a recurrent state before the last guesses

    @property
    def longest(self) -> int:
        """A forced verify's length: the copies' where they lead now, else the model's."""
        copies = self.copies
        copied = copies.propose(CopyDrafts.longest) if copies is not None else []
        if copies is not None and self.lead.leads(copies, copied):
            return max(len(copied), DRAFT_TOKENS)
        return DRAFT_TOKENS

    def extend(self, tokens: list[int]) -> None:
        tokens = [int(t) for t in tokens]
        self.context.extend(tokens)
        if self.copies is not None:
            self.copies.extend(tokens)
        self.lead.seen(tokens)

    def propose(self, k: int) -> list[int]:
        if k <= 0 or not self.context or NOT_A_TOKEN in self.context[len(self.cached) :]:
            return []
        copies = self.copies
        copied = copies.propose(k) if copies is not None else []
        # Copies lead where they guess no fewer tokens than the model would.
        full = len(copied) >= min(k, self.chain or k)
        if copies is not None and full and self.lead.leads(copies, copied):
            self.record.copied += len(copied)
            self.lead.proposed(copied, ["copy"] * len(copied), None)
            return copied
        drafts, more = self._guesses(k)
        self.record.copied += len(more)
        origins = ["model"] * len(drafts) + ["copy"] * len(more)
        drafts += more
        passed = copied[0] if copies is not None and CopyLead.long(copies, copied) else None
        self.lead.proposed(drafts, origins, passed)
        return drafts

    def _guesses(self, k: int) -> tuple[list[int], list[int]]:
        """The model's greedy guesses, up to `k` (or `chain`), and the copies of the context
        that go on from them where those lead (then the model stops guessing)."""
        import mlx.core as mx

        self._rewind()
        logits = self._feed(self.context[len(self.cached) :])
        self._agreed = len(self.cached)  # the guesses fed from here may be taken back
        self._checkpoint = Checkpoint(self.cache) if restorable(self.cache) else None
        drafts: list[int] = []
        limit = min(k, self.chain or k)
        while True:
            token = cast(int, mx.argmax(logits[0, -1]).item())  # mlx types item() wider
            drafts.append(token)
            more = self._copies_after(drafts, k)
            if more or len(drafts) >= limit:
                return drafts, more
            logits = self._feed([token])

    def _copies_after(self, drafts: list[int], k: int) -> list[int]:
        """Copies that fill the proposal after `drafts`, where they lead (else none)."""
        copies, left = self.copies, k - len(drafts)
        if copies is None or left <= 0:
            return []
        more = copies.propose_after(drafts, left)
        return more if len(more) == left and self.lead.leads(copies, more) else []

    def settled(self, accepted: int) -> None:
        """The last proposal's verify accepted its first `accepted` drafts."""
        self.lead.settled(accepted)

    def close(self) -> None:
        """The reply ended: its draft cache, back in step with the context, goes to the store
        (unless a feed failed midway: it may not hold what `cached` says)."""
        store, self.store = self.store, None  # once
        if not self._whole:
            return
        try:
            self._rewind(unfed=0)  # a guess the reply did not take would spoil a recurrent state
        except Exception:
            log.exception("draft cache rewind failed; not kept")
            return
        if store is not None and self._whole and self.cached:
            store.put(self.cached, self.cache)

    def _rewind(self, unfed: int = 1) -> None:
        """Take back the guesses the context did not take, keeping at least `unfed` context
        tokens unfed (the next logits come from feeding one): trimmed, or for a recurrent state
        put back to before the guesses and the accepted ones run again."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        shared = self._agreed
        limit = min(len(self.cached), len(self.context) - unfed)
        shared = min(shared, limit)
        while shared < limit and self.cached[shared] == self.context[shared]:
            shared += 1
        drop = len(self.cached) - shared
        if drop and can_trim_prompt_cache(self.cache):
            trim_prompt_cache(self.cache, drop)
        elif drop and (point := self._checkpoint) is not None and shared >= self._agreed:
            self._whole = False
            point.keep(self.model, self.cached[self._agreed :], shared - self._agreed)
            self._whole = True
        elif drop:  # a wrapped window cannot forget: start over
            self.cache, self.cached, shared = self._fresh(), [], 0
        del self.cached[shared:]
        self._agreed, self._checkpoint = shared, None

    def _feed(self, tokens: list[int], logits_wanted: bool = True) -> Any:
        """Run `tokens` through the draft model in chunks; the last chunk's logits (only its
        cache states are evaluated otherwise: the LM head over a prompt is a large matmul)."""
        import mlx.core as mx

        logits = None
        self._whole = False
        for at in range(0, len(tokens), self.prefill_step):
            chunk = tokens[at : at + self.prefill_step]
            logits = self.model(mx.array([chunk]), cache=self.cache)
            last = logits_wanted and at + len(chunk) == len(tokens)
            mx.eval(logits if last else [c.state for c in self.cache])
        self.cached.extend(tokens)
        self._whole = True
        return logits

    def __len__(self) -> int:
        return len(self.context)
