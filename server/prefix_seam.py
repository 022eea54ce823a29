"""The seam where a prefix KV cache plugs into generation; the default caches nothing.

The generation thread calls, for every request, on the thread that owns MLX:
  lookup(tokens) -> (prompt_cache or None, n_cached): a cache holding the KV state of
      tokens[:n_cached]; it may be mutated in place by generation, so hand out a copy.
  store(tokens, prompt_cache): after a request that finished normally; `tokens` are exactly
      the tokens whose KV state `prompt_cache` holds (prompt plus the generated ones fed back).
  stats() -> dict | None: figures for /v1/status ("cache") and /metrics.
  close(): on graceful shutdown (flush to disk).
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
