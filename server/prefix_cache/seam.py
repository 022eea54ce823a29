"""The seam where a prefix KV cache plugs into generation: one protocol, two implementations.

Wiring: `Engine(..., cache_factory=f)` (or `serve.build_engine(settings, f)`), where
`f(loaded: LoadedModel) -> PrefixCache` runs once on the generation thread after the model
loads. An `f` with `prepare(model_path)` (`Prepares`) has it called on that thread before the
load starts (the store's disk read-ahead). Then, on that same thread (the one that owns MLX),
for every request:
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
      still dirty within the stop's budget (adapter.StoreAdapter(flush_s=...)); entries otherwise
      reach disk on the store's write-behind thread.
From any thread: stats() -> dict | None ("cache" in /v1/status, gauges on /metrics),
list_entries() and clear(tier) -> freed bytes (GET and DELETE /v1/cache).
The n_cached of a lookup is what the APIs report as cached prompt tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class Prepares(Protocol):
    """A cache factory with work to start before the model loads (it must not use MLX)."""

    def prepare(self, model_path: str) -> None: ...


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
