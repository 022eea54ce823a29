"""The prefix cache across ranks: each rank keeps its shard of every entry (its own RAM tier
and disk folder), and a lookup is agreed by all, since ranks in lockstep must start a request
from the same number of cached tokens (generation thread only, every rank at the same point).

Each rank looks up its own shard; the agreed length is the shortest of them. A longer state is
trimmed back to it; when some rank cannot do that, every rank starts fresh. Rank 0 learns what
each rank's shard held, which `stats()["ranks"]` reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from server.model.distributed import gather_ints


class AgreedCache:
    """A PrefixCache (seam) whose lookups every rank agrees on; the rest is the rank's own."""

    def __init__(self, inner: Any, group: Any):
        self.inner = inner
        self.group = group
        self.size = group.size()
        self._lock = threading.Lock()
        self._ranks = [
            {"rank": r, "lookups": 0, "hits": 0, "cached_tokens": 0} for r in range(self.size)
        ]

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        cache, n = self.inner.lookup(tokens)
        held = [row[0] for row in gather_ints(self.group, [n if cache is not None else 0])]
        self._count(held)
        agreed = min(held)
        if agreed == 0:
            return None, 0
        ok = n == agreed
        if not ok and can_trim_prompt_cache(cache):
            trim_prompt_cache(cache, n - agreed)
            ok = True
        if not all(row[0] for row in gather_ints(self.group, [int(ok)])):
            return None, 0
        return cache, agreed

    def _count(self, held: list[int]) -> None:
        with self._lock:
            for row, n in zip(self._ranks, held, strict=True):
                row["lookups"] += 1
                row["hits"] += int(n > 0)
                row["cached_tokens"] += n

    def stats(self) -> dict | None:
        stats = self.inner.stats()
        if stats is not None:
            with self._lock:
                stats = {**stats, "ranks": [dict(row) for row in self._ranks]}
        return stats

    def store(self, tokens: list[int], prompt_cache: list[Any], kind: str = "prompt") -> None:
        self.inner.store(tokens, prompt_cache, kind=kind)

    def record_prefill(self, n_tokens: int, seconds: float) -> None:
        self.inner.record_prefill(n_tokens, seconds)

    def prefetch(self, should_stop: Callable[[], bool]) -> None:
        self.inner.prefetch(should_stop)

    def list_entries(self) -> list[dict]:
        return self.inner.list_entries()

    def clear(self, tier: str) -> int:
        return self.inner.clear(tier)  # rank 0's shard; the others' then miss, which agrees

    def shed(self, budget_s: float) -> dict:
        return self.inner.shed(budget_s)

    def close(self) -> None:
        self.inner.close()
