"""Which stored entry serves a prompt, which entries a new one replaces, and the default
budgets (pure, no MLX)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_RAM_FRACTION = 0.10
DEFAULT_DISK_BYTES = 20 << 30


def default_ram_bytes(fraction: float = DEFAULT_RAM_FRACTION) -> int:
    import psutil

    return int(psutil.virtual_memory().total * fraction)


@dataclass
class Lookup:
    """What `PrefixStore.lookup` hands the generation.

    `cache` is a per-layer cache list holding the KV of `tokens[:cached_tokens]` (a fresh, empty
    one on a miss); prefill `tokens[cached_tokens:]` into it. `cached_tokens < len(tokens)`
    always, so at least one token is left to compute the next-token logits from.
    """

    cache: list[Any]
    cached_tokens: int
    source: str  # "ram", "disk" or "miss"


def supersedes(new_trimmable: bool, ancestor_kind: str) -> bool:
    """Whether a new entry replaces a stored one that is a prefix of it: when it can serve it by
    trimming, or the ancestor is the same conversation's earlier turn (one entry each)."""
    return new_trimmable or ancestor_kind != "system"


def choose(found, limit: int, can_trim: Callable[[Any], bool]) -> tuple[Any, int]:
    """(value, usable tokens) of the best `TokenTrie.candidates` row for a prompt whose first
    `limit` tokens may be reused; a row that needs trimming only if its entry can be trimmed."""
    best, usable = None, 0
    for n, value, longer in found:
        use = min(n, limit)
        if use > usable and ((not longer and use == n) or can_trim(value)):
            best, usable = value, use
    return best, usable
