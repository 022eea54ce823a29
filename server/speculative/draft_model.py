"""A draft model: a small model with the target's tokenizer decodes greedily on its own KV cache
and proposes what it writes. Its cache follows the context lazily: before each proposal it is
trimmed back to the longest prefix it shares with the context (what the verify accepted) and fed
the rest, as mlx-lm's speculative_generate_step keeps its draft cache in step.
"""

from __future__ import annotations

from typing import Any, cast

from server.speculative.copy_drafts import NOT_A_TOKEN

DRAFT_TOKENS = 4  # `--speculative draft` verifies this many each step (k draft forwards)
PREFILL_STEP = 2048  # the draft's prompt runs in chunks of this many tokens


class DraftModel:
    """The draft source over one request's context (generation thread only)."""

    name = "draft"
    free = False  # each proposal costs draft forwards: plain steps ask for none
    longest = DRAFT_TOKENS

    def __init__(self, model: Any, tokens: list[int], prefill_step: int | None = None):
        """Prefills the draft's own cache with `tokens` but the last (its logits come with the
        first proposal)."""
        from mlx_lm.models.cache import make_prompt_cache

        self.model = model
        self.prefill_step = prefill_step or PREFILL_STEP
        self.context = list(tokens)
        self._fresh = lambda: make_prompt_cache(model)
        self.cache = self._fresh()
        self.cached: list[int] = []  # the tokens the draft cache holds, in order
        if len(self.context) > 1:
            self._feed(self.context[:-1])

    def extend(self, tokens: list[int]) -> None:
        self.context.extend(int(t) for t in tokens)

    def propose(self, k: int) -> list[int]:
        import mlx.core as mx

        if k <= 0 or not self.context or NOT_A_TOKEN in self.context[len(self.cached) :]:
            return []
        self._rewind()
        logits = self._feed(self.context[len(self.cached) :])
        drafts: list[int] = []
        while True:
            token = cast(int, mx.argmax(logits[0, -1]).item())  # mlx types item() wider
            drafts.append(token)
            if len(drafts) == k:
                return drafts
            logits = self._feed([token])

    def _rewind(self) -> None:
        """Trim the cache to the longest prefix it shares with the context, keeping at least one
        context token unfed (the next logits come from feeding it)."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        shared = 0
        limit = min(len(self.cached), len(self.context) - 1)
        while shared < limit and self.cached[shared] == self.context[shared]:
            shared += 1
        drop = len(self.cached) - shared
        if not drop:
            return
        if can_trim_prompt_cache(self.cache):
            trim_prompt_cache(self.cache, drop)
            del self.cached[shared:]
        else:  # an untrimmable draft cache (a hybrid, a wrapped window) starts over
            self.cache, self.cached = self._fresh(), []

    def _feed(self, tokens: list[int]) -> Any:
        """Run `tokens` through the draft model in chunks; the last chunk's logits."""
        import mlx.core as mx

        logits = None
        for at in range(0, len(tokens), self.prefill_step):
            chunk = tokens[at : at + self.prefill_step]
            logits = self.model(mx.array([chunk]), cache=self.cache)
            mx.eval(logits if at + len(chunk) == len(tokens) else [c.state for c in self.cache])
        self.cached.extend(tokens)
        return logits

    def __len__(self) -> int:
        return len(self.context)
