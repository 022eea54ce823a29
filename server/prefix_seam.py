"""The seam where a prefix KV cache plugs into generation; the default caches nothing.

Wiring: `Engine(..., cache_factory=f)` (or `serve.build_engine(settings, f)`), where
`f(loaded: LoadedModel) -> PrefixCache` runs once on the generation thread after the model
loads. Then, on that same thread (the one that owns MLX), for every request:
  lookup(tokens) -> (prompt_cache or None, n_cached): a cache holding the KV state of
      tokens[:n_cached]. Generation mutates it in place, so hand out a copy. If n_cached equals
      len(tokens) the engine trims one token off, since the last one must run for logits.
  store(tokens, prompt_cache): after a request that finished (not a cancelled one); `tokens`
      are exactly the tokens whose KV state `prompt_cache` holds (the prompt plus the generated
      tokens fed back), so len(tokens) == prompt_cache[0].offset. Trim to the prompt if wanted.
  stats() -> dict | None: shown as "cache" in /v1/status, numeric values as gauges on /metrics.
  close(): once, on graceful shutdown, before the generation thread ends (flush to disk).
Optional: record_prefill(n_tokens, seconds) after each prefill of 64+ new tokens (measured
speed); list_entries() and clear(tier) -> freed bytes back GET and DELETE /v1/cache.
The n_cached of a lookup is what the APIs report as cached prompt tokens.
"""

from __future__ import annotations

from typing import Any, Protocol


class PrefixCache(Protocol):
    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]: ...

    def store(self, tokens: list[int], prompt_cache: list[Any]) -> None: ...

    def stats(self) -> dict | None: ...

    def close(self) -> None: ...


class NoPrefixCache:
    """Every request prefills from scratch."""

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        return None, 0

    def store(self, tokens: list[int], prompt_cache: list[Any]) -> None:
        pass

    def stats(self) -> dict | None:
        return None

    def close(self) -> None:
        pass
