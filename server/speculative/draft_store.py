"""The draft model's KV caches of recent requests, kept in RAM so the next turn of a conversation
feeds the draft only its new tokens (a Claude Code turn's ~20K-token context took the draft a full
prefill on every request, while the target's came from the prefix cache).

An LRU bounded by count and bytes. A request takes (moves out) the entry sharing the longest
token prefix with its context, trimmed to that prefix; an untrimmable cache (a hybrid's recurrent
state, a rotating window that wrapped) is taken only where its tokens are a whole prefix of the
context. The request gives its cache back when it ends. Generation thread only; `status` from any.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if not n:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


class DraftCaches:
    def __init__(self, entries: int, max_bytes: int):
        """At most `entries` caches (--draft-cache-entries) of `max_bytes` together."""
        self.entries, self.max_bytes = entries, max_bytes
        self._kept: OrderedDict[int, tuple[list[int], list[Any], int]] = OrderedDict()
        self._next = 0
        self._bytes = 0  # what the kept caches hold (read by status from any thread)
        self.hits = self.misses = self.evicted = 0
        self.reused_tokens = 0  # tokens the draft did not prefill again, over all hits

    def take(self, context: list[int]) -> tuple[list[int], list[Any]] | None:
        """The entry sharing the longest prefix with `context`, moved out and trimmed to it:
        (its tokens, its cache), which leave at least the context's last token to feed."""
        from server.model.kv_state import trimmable

        best: tuple[int, int] | None = None  # (usable tokens, key)
        for key, (tokens, cache, _) in self._kept.items():
            shared = shared_prefix(tokens, context)
            usable = min(shared, len(context) - 1)
            if usable < len(tokens) and not trimmable(cache):
                continue  # a recurrent state cannot forget its tail: only a whole prefix serves
            if usable > 0 and (best is None or usable > best[0]):
                best = (usable, key)
        if best is None:
            self.misses += 1
            return None
        usable, key = best
        tokens, cache, nbytes = self._kept.pop(key)
        self._bytes -= nbytes
        if len(tokens) > usable:
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(cache, len(tokens) - usable)
            tokens = tokens[:usable]
        self.hits += 1
        self.reused_tokens += usable
        return tokens, cache

    def put(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep `cache`, which holds exactly `tokens`; the least recently kept go past a bound."""
        from server.model.kv_state import cache_nbytes, trimmable

        if self.entries <= 0 or not tokens:
            return
        nbytes = cache_nbytes(cache)
        if nbytes > self.max_bytes:
            self.evicted += 1
            return
        if trimmable(cache):  # an entry it extends serves no lookup it cannot
            for key in [k for k, (t, _, _) in self._kept.items() if _extends(tokens, t)]:
                self._bytes -= self._kept.pop(key)[2]
        self._kept[self._next] = (list(tokens), cache, nbytes)
        self._next += 1
        self._bytes += nbytes
        while len(self._kept) > self.entries or self._bytes > self.max_bytes:
            self._bytes -= self._kept.popitem(last=False)[1][2]
            self.evicted += 1

    def shed(self) -> int:
        """Drop every kept cache (device memory is short: a draft prefills again, cheaply, rather
        than a request wait); the bytes they held."""
        freed, self._bytes = self._bytes, 0
        self.evicted += len(self._kept)
        self._kept.clear()
        return freed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._kept)

    def status(self) -> dict:
        return {
            "entries": len(self._kept),
            "max_entries": self.entries,
            "bytes": self.nbytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evicted": self.evicted,
            "reused_tokens": self.reused_tokens,
        }


def _extends(tokens: list[int], shorter: list[int]) -> bool:
    return len(shorter) <= len(tokens) and shared_prefix(tokens, shorter) == len(shorter)
