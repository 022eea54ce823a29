"""The seam where a prefix KV cache plugs into generation: one protocol, two implementations.

Wiring: `Engine(..., cache_factory=f)` (or `serve.build_engine(settings, f)`), where
`f(loaded: LoadedModel) -> PrefixCache` runs once on the generation thread after the model
loads. Then, on that same thread (the one that owns MLX), for every request:
  lookup(tokens) -> (prompt_cache or None, n_cached): a cache holding the KV state of
      tokens[:n_cached]. Generation mutates it in place, so hand out a copy. If n_cached equals
      len(tokens) the engine trims one token off, since the last one must run for logits.
  store(tokens, prompt_cache, kind="prompt"): at checkpoints during prefill (kind "system" at
      the end of the system+tools prefix), after a request that finished, and after a prefill
      cut short; `tokens` are the tokens whose KV state `prompt_cache` holds (or, for a
      trimmable cache, a prefix of them: the prompt of a finished reply). The cache copies.
  record_prefill(n_tokens, seconds): after each prefill of 64+ new tokens (measured speed).
  prefetch(should_stop): once, right after ready: disk entries into RAM, most recent first,
      until should_stop() (a job is waiting).
  close(): once, on graceful shutdown, before the generation thread ends: writes what is
      still dirty within the stop's budget (StoreAdapter(flush_s=...)); entries otherwise
      reach disk on the store's write-behind thread.
From any thread: stats() -> dict | None ("cache" in /v1/status, gauges on /metrics),
list_entries() and clear(tier) -> freed bytes (GET and DELETE /v1/cache).
The n_cached of a lookup is what the APIs report as cached prompt tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .store import PrefixStore

log = logging.getLogger("server.cache")

TIERS = ("ram", "disk", "both")


class UnknownTier(ValueError):
    """A tier name other than ram, disk or both."""


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise UnknownTier(f"tier must be one of ram, disk, both (got {tier!r})")
    return tier


class PrefixCache(Protocol):
    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]: ...

    def store(self, tokens: list[int], prompt_cache: list[Any], kind: str = "prompt") -> None: ...

    def record_prefill(self, n_tokens: int, seconds: float) -> None: ...

    def prefetch(self, should_stop: Callable[[], bool]) -> None: ...

    def stats(self) -> dict | None: ...

    def list_entries(self) -> list[dict]: ...

    def clear(self, tier: str) -> int: ...

    def shed(self, budget_s: float) -> dict: ...

    def close(self) -> None: ...

    @property
    def enabled(self) -> bool: ...


class NoPrefixCache:
    """Every request prefills from scratch."""

    enabled = False

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        return None, 0

    def store(self, tokens: list[int], prompt_cache: list[Any], kind: str = "prompt") -> None:
        pass

    def record_prefill(self, n_tokens: int, seconds: float) -> None:
        pass

    def prefetch(self, should_stop: Callable[[], bool]) -> None:
        pass

    def stats(self) -> dict | None:
        return None

    def list_entries(self) -> list[dict]:
        return []

    def clear(self, tier: str) -> int:
        check_tier(tier)
        return 0

    def shed(self, budget_s: float) -> dict:
        return {"written": 0, "freed_bytes": 0}

    def close(self) -> None:
        pass


class StoreAdapter:
    """A PrefixStore behind the seam: lookup as a tuple, close flushes the RAM tier to disk."""

    enabled = True

    def __init__(self, store: PrefixStore, flush_s: float | None = None):
        self.prefix_store = store
        self.flush_s = flush_s  # the stop's time budget for writing what is still dirty

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
        hit = self.prefix_store.lookup(tokens)
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
