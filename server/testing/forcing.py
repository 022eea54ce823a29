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

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        position = self.calls
        self.calls += 1
        target = self.tokens[position] if position < len(self.tokens) else self.end
        allowed = mx.arange(logits.shape[-1]) == target
        return mx.where(allowed, logits, mx.array(-mx.inf, logits.dtype))


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
