"""The per-request logits processor that keeps a tool call inside its grammar.

mlx-lm calls it with the tokens so far (the last one being fed in) and the next logits; the
previous sampled token advances the matcher, then the matcher's mask goes onto the logits.
A forced call is constrained from the first token; with `auto` the matcher starts when the model
writes the call's opening token and stops at the call's end. Generation thread only.

A verify step masks all its positions at once (`process_many`, as if every draft is accepted:
llguidance consumes them speculatively) and `commit` rolls the matcher and the counters back to
what the accepted ones leave, as vllm's structured output does under speculative decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.decoding.constrained import closing, masks
from server.decoding.constrained.plan import CallConstraint
from server.decoding.constrained.text_format import JSON_TEXT

log = logging.getLogger("server.engine")


@dataclass
class _Mark:
    """The processor's state before a verify's position: what `commit` puts back."""

    seen: int
    generated: int
    off: bool
    closing: bool
    cut_short: bool
    need: int | None
    matcher: Any
    call: bytes | None
    consumed: int  # tokens the verify's matchers had consumed by then


class CallProcessor:
    def __init__(self, constraint: CallConstraint, max_tokens: int | None, request_id: str = ""):
        self.constraint = constraint
        self.llt = constraint.tokenizer
        self.max_tokens = max_tokens
        self.request_id = request_id
        self.matcher = constraint.new_matcher() if constraint.forced else None
        # A JSON reply (text.format) has no call to steer closed: its grammar alone decides.
        steered = constraint.forced and constraint.fmt != JSON_TEXT
        self.call: bytearray | None = bytearray() if steered else None
        self.words = np.full((1, (self.llt.vocab_size + 31) // 32), -1, dtype=np.int32)
        self.seen = 0  # calls so far; from the second on, tokens[-1] is the last sampled token
        self.generated = 0
        self.off = False  # set on an unexpected state: decoding goes on unconstrained
        self.closing = False  # steering the open call to its end (max_tokens is near)
        self.cut_short = False  # ...and it had not ended by itself: the reply says "length"
        self._need: int | None = None  # tokens closing took in the last dry run
        # The shortest forced reply (checked at admission) bounds the first dry run's answer.
        self._smallest = constraint.smallest_reply() if constraint.forced else 0
        self._end = self.llt.decode_bytes(self.llt.tokenize_str(constraint.end))
        self._broken = False  # a constraint bug or a matcher error: no rollback undoes it
        self._marks: list[_Mark] = []  # a verify's positions, until `commit`
        self._consumed: list[Any] | None = None  # while verifying: each consuming matcher

    def process_many(self, fed: list[int], logits):
        """A verify's rows masked at once, as if every draft is accepted: `fed[i]` is fed at
        position i (the pending token, then the drafts) and `logits[i]` scores the token after
        it. A draft the grammar forbids cannot be accepted: the rows stop before it."""
        rows = np.full((len(fed), self.words.shape[-1]), -1, dtype=np.int32)
        masked = np.zeros(len(fed), dtype=bool)
        self._marks, self._consumed = [], []
        for i, token in enumerate(fed):
            if i and self._forbids(token):
                rows, masked = rows[:i], masked[:i]
                break
            self._marks.append(self._mark())
            words = self._mask(token if self.seen else None, logits[i : i + 1])
            if words is not None:
                rows[i], masked[i] = words.reshape(-1), True
        kept = logits[: len(rows)]
        return masks.apply(kept, rows, masked) if masked.any() else kept

    def commit(self, kept: int) -> None:
        """Keep the verify's first `kept` positions: the state is what plain decoding leaves
        after them (the matcher rolled back past the rest)."""
        marks, self._marks = self._marks, []
        consumed, self._consumed = self._consumed or [], None
        if kept >= len(marks):
            return
        mark = marks[kept]
        undo = sum(1 for m in consumed[mark.consumed :] if m is mark.matcher)
        if undo and not mark.matcher.rollback(undo):
            self._give_up(mark.matcher.get_error())
        self.seen, self.generated, self.matcher = mark.seen, mark.generated, mark.matcher
        self.closing, self.cut_short, self._need = mark.closing, mark.cut_short, mark.need
        self.call = None if mark.call is None else bytearray(mark.call)
        self.off = mark.off or self._broken

    def _mark(self) -> _Mark:
        call = None if self.call is None else bytes(self.call)
        consumed = len(self._consumed or [])
        return _Mark(
            self.seen,
            self.generated,
            self.off,
            self.closing,
            self.cut_short,
            self._need,
            self.matcher,
            call,
            consumed,
        )

    def _forbids(self, token: int) -> bool:
        """Whether the grammar refuses `token` next (it is consumed only where it allows it)."""
        m = self.matcher
        if self.off or m is None or m.is_stopped():
            return False
        return not m.validate_tokens([token])

    def __call__(self, tokens, logits):
        import mlx.core as mx

        mx.async_eval(logits)  # the forward pass runs while the mask is computed below
        token = int(tokens.reshape(-1)[-1].item()) if self.seen else None
        return self._step(token, logits)

    def _step(self, token: int | None, logits):
        """Advance by `token` (None on the first call: the prompt's last) and mask `logits`."""
        words = self._mask(token, logits)
        return logits if words is None else masks.apply(logits, words)

    def _mask(self, token: int | None, logits) -> np.ndarray | None:
        """Advance by `token` and give the mask for the next token (None: anything goes)."""
        try:
            return self._process(token, logits)
        except Exception:  # a constraint bug must not fail the request: decode freely
            log.exception("constrained decoding stopped for request %s", self.request_id)
            self.off = self._broken = True
            return None

    def _process(self, token: int | None, logits) -> np.ndarray | None:
        if token is not None:
            self._advance(token)
        self.seen += 1
        matcher = self.matcher
        if self.off or matcher is None:
            return None
        if matcher.is_stopped():  # the grammar is complete: only the end of turn may follow
            return masks.only(self.words, np.array(self.llt.eos_tokens, dtype=np.int64))
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(matcher, self.words)
        if matcher.is_error():
            self._give_up(matcher.get_error())
            return None
        return self._closing(self.words, logits)

    def _advance(self, token: int) -> None:
        self.generated += 1
        if self.off:
            return
        if self.matcher is None:
            if token == self.constraint.opener:  # auto: the model opened a call
                self.matcher = self.constraint.new_matcher()
                self.call = bytearray()
            return
        if self.matcher.is_stopped():
            return
        if not self.matcher.consume_token(token):
            self._give_up(self.matcher.get_error())
            return
        if self._consumed is not None:
            self._consumed.append(self.matcher)
        if token == self.constraint.opener:
            self.call = bytearray()
        elif self.call is not None:
            self.call += self.llt.decode_bytes([token])
        if not self.constraint.forced and self.matcher.is_accepting():
            self.matcher, self.call = None, None  # the call is complete: back to free text

    def _closing(self, words: np.ndarray, logits) -> np.ndarray:
        """The mask to apply. In the budget's last tokens the call grows no new items where it can
        close instead; just before closing must start, a JSON call only writes string text that
        keeps closing's cost as it is (so no sampled token can put the end out of reach); and
        when closing needs all that is left, only the token that closes it soonest is allowed
        (the call counts as cut short where that was not the model's pick)."""
        left = (self.max_tokens or 0) - self.generated
        if not self.max_tokens or self.call is None or left > self._horizon():
            return words
        fmt, call, end = self.constraint.fmt, bytes(self.call), self._end
        done = closing.target(fmt, call, end) is None
        slack = closing.SLACK.get(fmt, 2)
        if not (self.closing or done):
            # A dry run costs a mask per step: every 8th token, and each token once it is near.
            near = self._need is not None and left <= self._need + slack + closing.NEAR + 8
            if self._need is None or near or left % 8 == 0:
                # Never capped below what is left: a cost past the horizon is seen as it is.
                limit = max(closing.HORIZON, left + 1)
                self._need = closing.steps_to_close(self.matcher, self.llt, fmt, call, end, limit)
            self.closing = left <= self._need + slack
        need = self._need or 0
        if self.closing or done:  # a finished call ends the turn rather than open another
            token = closing.next_token(self.llt, fmt, call, end, words, self.matcher)
            chosen = words if token is None else masks.only(words, np.array([token]))
        elif left <= need + slack + closing.NEAR:
            chosen = self._holding(call, end, words, logits, left)
        else:
            chosen = closing.no_new_structure(self.llt, fmt, call, words)
        if chosen is not words and not done and not self.cut_short:
            free, out = masks.apply(logits, words), masks.apply(logits, chosen)
            self.cut_short = int(free.argmax().item()) != int(out.argmax().item())
        return chosen

    def _horizon(self) -> int:
        """How far from the end closing is watched: further where the call costs more to close
        than the usual horizon holds (the smallest call, or the last dry run, says)."""
        need = self._need if self._need is not None else self._smallest
        return max(closing.HORIZON, need + closing.SLACK.get(self.constraint.fmt, 2) + 16)

    def _holding(self, call: bytes, end: bytes, words: np.ndarray, logits, left: int):
        """Near the end, what may come next: closing's own next token, string text that leaves
        closing's cost unchanged, and those of the model's likeliest tokens a dry run shows
        still close in time. Any other token could raise the cost by more than is left."""
        fmt, llt = self.constraint.fmt, self.llt
        token = closing.next_token(llt, fmt, call, end, words, self.matcher)
        if token is None:
            return words
        keep = masks.only(words, np.array([token]))
        if closing.in_json_string(fmt, call):
            keep = keep | (words & closing.plain_text(llt))
        for candidate in masks.likeliest(logits, words, closing.CANDIDATES):
            if masks.allowed_among(keep, np.array([candidate])).size:
                continue  # already known safe: no dry run
            if self._closes_after(candidate, call, end, left - 1):
                keep = keep | masks.only(words, np.array([candidate]))
        return keep

    def _closes_after(self, token: int, call: bytes, end: bytes, left: int) -> bool:
        """Whether the call still closes within `left` tokens once `token` is written."""
        assert self.matcher is not None  # (only a call in progress is held near its end)
        matcher = self.matcher.deep_copy()
        if not matcher.consume_token(token):
            return False
        after = call + self.llt.decode_bytes([token])
        fmt = self.constraint.fmt
        return closing.steps_to_close(matcher, self.llt, fmt, after, end, left + 1) <= left

    def _give_up(self, error: str) -> None:
        log.warning(
            "constrained decoding stopped for request %s: %s",
            self.request_id,
            error.splitlines()[0] if error else "matcher error",
        )
        self.off = self._broken = True


def factory(request: Any, rendered: Any, loaded: Any) -> CallProcessor | None:
    """`decoding.processors` factory: a processor for requests whose render planned a constraint."""
    constraint = getattr(rendered, "constraint", None)
    if constraint is None:
        return None
    constraint = constraint.attach(loaded.tokenizer)  # a rank's replica arrives without it
    return CallProcessor(constraint, request.max_tokens, request.request_id)
