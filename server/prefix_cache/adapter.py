"""The prefix store behind the seam (`seam.PrefixCache`): what the engine calls, logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from server.prefix_cache.store import PrefixStore

log = logging.getLogger("server.cache")


class StoreAdapter:
    """A PrefixStore behind the seam: lookup as a tuple, close flushes the RAM tier to disk."""

    enabled = True

    def __init__(self, store: PrefixStore, flush_s: float | None = None):
        self.prefix_store = store
        self.flush_s = flush_s  # the stop's time budget for writing what is still dirty
        self._after_prefetch = False  # the next lookup is the first after ready: logged

    def restore(self) -> int:
        """Load the disk tier's most recent entries into RAM (start-up); logged with timing."""
        if self.prefix_store.disk is None:
            return 0
        started = time.perf_counter()
        count = self.prefix_store.restore()
        tokens = sum(e["tokens"] for e in self.prefix_store.list_entries() if e["tier"] == "ram")
        log.info(
            "kv cache: restored %d entries (%d tokens) from %s in %.2fs",
            count,
            tokens,
            self.prefix_store.disk.folder,
            time.perf_counter() - started,
        )
        return count

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        started = time.perf_counter()
        hit = self.prefix_store.lookup(tokens)
        if self._after_prefetch:
            self._after_prefetch = False
            # What the read-ahead held for the entries the prefetch did not reach is freed now.
            self.prefix_store.drop_read_ahead()
            log.info(
                "kv cache: first lookup after ready took %.3fs (%s, %d of %d tokens cached)",
                time.perf_counter() - started,
                hit.source,
                hit.cached_tokens,
                len(tokens),
            )
        return hit.cache, hit.cached_tokens

    def store(self, tokens: list[int], prompt_cache: list[Any], kind: str = "prompt") -> None:
        self.prefix_store.store(tokens, prompt_cache, kind=kind)

    def record_prefill(self, n_tokens: int, seconds: float) -> None:
        self.prefix_store.record_prefill(n_tokens, seconds)

    def prefetch(self, should_stop: Callable[[], bool]) -> None:
        """Lazy restore's second half: entries load now unless a request needs them first."""
        if self.prefix_store.disk is None or self.prefix_store.restored["mode"] != "lazy":
            return
        started = time.perf_counter()
        self._after_prefetch = True
        count = self.prefix_store.restore(should_stop=should_stop, mode="lazy")
        log.info("kv cache: prefetched %d entries in %.2fs", count, time.perf_counter() - started)

    def stats(self) -> dict | None:
        return self.prefix_store.stats()

    def list_entries(self) -> list[dict]:
        return self.prefix_store.list_entries()

    def clear(self, tier: str) -> int:
        return self.prefix_store.clear(tier)

    def shed(self, budget_s: float) -> dict:
        """Memory pressure: write what is dirty (most recent first, within `budget_s`), then
        drop the RAM tier, so a shed costs RAM, not the conversations only RAM held."""
        written = self.prefix_store.write_dirty(deadline=time.monotonic() + budget_s)
        freed = self.prefix_store.clear("ram")
        log.info("kv cache: shed the RAM tier (%d bytes) after writing %d entries", freed, written)
        return {"written": written, "freed_bytes": freed}

    def close(self) -> None:
        started = time.perf_counter()
        written = self.prefix_store.flush(self.flush_s)
        if self.prefix_store.disk is not None:
            log.info(
                "kv cache: flush on stop wrote %d entries in %.2fs (%d still dirty)",
                written,
                time.perf_counter() - started,
                len(self.prefix_store.dirty()),
            )
