"""Prefix KV cache: longest-shared-prefix reuse of KV state, in RAM and on disk.

    cache = PrefixCache.for_model(model, model_dir, disk_root=home / "cache" / "kv")
    hit = cache.lookup(prompt_ids)           # hit.cache holds prompt_ids[:hit.cached_tokens]
    ...prefill prompt_ids[hit.cached_tokens:] into hit.cache, generate...
    cache.store(prompt_ids + generated_ids, hit.cache)

`disk_index` (no MLX) lists, clears and prunes the disk tier when no worker runs.
"""

from .normalize import normalize_anthropic_request
from .store import Lookup, PrefixCache, default_ram_bytes

__all__ = ["Lookup", "PrefixCache", "default_ram_bytes", "normalize_anthropic_request"]
