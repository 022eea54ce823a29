"""The per-request logits processor that keeps a tool call inside its grammar.

mlx-lm calls it with the tokens so far (the last one being fed in) and the next logits; the
previous sampled token advances the matcher, then the matcher's mask goes onto the logits.
A forced call is constrained from the first token; with `auto` the matcher starts when the model
writes the call's opening token and stops at the call's end. Generation thread only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from server.constrained import closing, masks
from server.constrained.plan import CallConstraint

log = logging.getLogger("server.engine")


class CallProcessor:
    def __init__(self, constraint: CallConstraint, max_tokens: int | None, request_id: str = ""):
        self.constraint = constraint
        self.llt = constraint.tokenizer
        self.max_tokens = max_tokens
        self.request_id = request_id
        self.matcher = constraint.new_matcher() if constraint.forced else None
        self.call: bytearray | None = bytearray() if constraint.forced else None
        self.words = np.full((1, (self.llt.vocab_size + 31) // 32), -1, dtype=np.int32)
        self.seen = 0  # calls so far; from the second on, tokens[-1] is the last sampled token
        self.generated = 0
        self.off = False  # set on an unexpected state: decoding goes on unconstrained
        self.closing = False  # steering the open call to its end (max_tokens is near)
        self.cut_short = False  # ...and it had not ended by itself: the reply says "length"
        self._end = self.llt.decode_bytes(self.llt.tokenize_str(constraint.end))

    def __call__(self, tokens, logits):
        try:
            return self._process(tokens, logits)
        except Exception:  # a constraint bug must not fail the request: decode freely
            log.exception("constrained decoding stopped for request %s", self.request_id)
            self.off = True
            return logits

    def _process(self, tokens, logits):
        import mlx.core as mx

        mx.async_eval(logits)  # the forward pass runs while the mask is computed below
        if self.seen:
            self._advance(int(tokens.reshape(-1)[-1].item()))
        self.seen += 1
        matcher = self.matcher
        if self.off or matcher is None or matcher.is_stopped():
            return logits
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(matcher, self.words)
        if matcher.is_error():
            self._give_up(matcher.get_error())
            return logits
        words = self._closing(self.words)
        return masks.apply(logits, words)

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
        if token == self.constraint.opener:
            self.call = bytearray()
        elif self.call is not None:
            self.call += self.llt.decode_bytes([token])
        if not self.constraint.forced and self.matcher.is_accepting():
            self.matcher, self.call = None, None  # the call is complete: back to free text

    def _closing(self, words: np.ndarray) -> np.ndarray:
        """Near the budget's end, keep only the allowed token that closes the call soonest."""
        if not self.max_tokens or self.call is None:
            return words
        fmt, call = self.constraint.fmt, bytes(self.call)
        if not self.closing:
            left = self.max_tokens - self.generated
            if left > closing.HORIZON:
                return words
            done = closing.target(fmt, call, self._end) is None
            # A finished call ends the turn here rather than open one that cannot finish.
            need = (
                0 if done else closing.steps_to_close(self.matcher, self.llt, fmt, call, self._end)
            )
            if left > need + closing.RESERVE and not done:
                return closing.no_new_structure(self.llt, fmt, call, words)
            self.closing, self.cut_short = True, not done
        token = closing.next_token(self.llt, fmt, call, self._end, words)
        return words if token is None else masks.only(words, np.array([token]))

    def _give_up(self, error: str) -> None:
        log.warning(
            "constrained decoding stopped for request %s: %s",
            self.request_id,
            error.splitlines()[0] if error else "matcher error",
        )
        self.off = True


def factory(request: Any, rendered: Any, loaded: Any) -> CallProcessor | None:
    """`server.logits` factory: a processor for requests whose render planned a constraint."""
    constraint = getattr(rendered, "constraint", None)
    if constraint is None:
        return None
    return CallProcessor(constraint, request.max_tokens, request.request_id)
