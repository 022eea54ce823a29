"""`PrefixCache` in the shape of the worker's seam (`server.prefix_seam.PrefixCache`)."""

from __future__ import annotations

from typing import Any

from .store import PrefixCache


class SeamAdapter:
    """lookup -> (cache, n_cached); close flushes the RAM tier to disk (graceful stop)."""

    def __init__(self, cache: PrefixCache, restore: bool = True):
        self.cache = cache
        if restore:
            cache.restore()

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        hit = self.cache.lookup(tokens)
        return hit.cache, hit.cached_tokens

    def store(self, tokens: list[int], prompt_cache: list[Any]) -> None:
        self.cache.store(tokens, prompt_cache)

    def stats(self) -> dict | None:
        return self.cache.stats()

    def close(self) -> None:
        self.cache.flush()
