"""A test-only logits processor that makes a random-weight model write a known text.

Speculative decoding's speed depends on how often drafts match what the model writes; a random
model writes noise. Forcing its choice to be a real text (a code edit, prose) measures acceptance
on that text. It only masks the logits: every draft is still verified by the real forward pass,
and a draft counts only where it equals the forced token, as it would with a model that chose it.
"""

from __future__ import annotations

from typing import Any


class ForceTokens:
    """Forces `tokens` in order, then the end of turn (`end`); the first call feeds the prompt's
    last token, each later one the token sampled before it (as every processor here sees them)."""

    def __init__(self, tokens: list[int], end: int):
        self.tokens, self.end = list(tokens), end
        self.calls = 0
        self._before = 0  # `calls` before a verify's positions

    def __call__(self, tokens: Any, logits: Any) -> Any:
        return self.process_many([0], logits)

    def process_many(self, fed: list[int], logits: Any) -> Any:
        """Each row forced to its position's token (a verify's rows: as if every draft counts)."""
        import mlx.core as mx

        self._before = self.calls
        self.calls += logits.shape[0]
        targets = [self._target(i) for i in range(self._before, self.calls)]
        allowed = mx.arange(logits.shape[-1])[None] == mx.array(targets)[:, None]
        return mx.where(allowed, logits, mx.array(-mx.inf, logits.dtype))

    def commit(self, kept: int) -> None:
        """A verify kept its first `kept` positions."""
        self.calls = self._before + kept

    def _target(self, position: int) -> int:
        return self.tokens[position] if position < len(self.tokens) else self.end


FORCE_ENV = "MLXCTL_TEST_FORCE_REPLIES"  # a JSON file: [{"marker": str, "reply": str}, ...]


def force_factory(path: str):
    """A `decoding.processors` factory for test and benchmark workers: a prompt whose text holds
    a marker gets that marker's reply forced (its own tokens, then the end of turn)."""
    import json
    from pathlib import Path

    replies = [(r["marker"], r["reply"]) for r in json.loads(Path(path).read_text())]

    def factory(request: Any, rendered: Any, loaded: Any) -> ForceTokens | None:
        for marker, reply in replies:
            if marker in rendered.text:
                tokenizer = loaded.tokenizer
                end = min(tokenizer.eos_token_ids)
                return ForceTokens(tokenizer.encode(reply, add_special_tokens=False), end)
        return None

    return factory
