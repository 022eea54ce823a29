"""The prefix KV cache: a RAM tier (LRU under a byte budget) over an optional disk tier.

Used from the worker's single generation thread (lookup, store, flush, restore); stats,
listing, clear and prune may come from HTTP threads, so all RAM state sits behind one lock.
Handed-out caches are fresh objects whose arrays are slices of the stored ones: MLX arrays are
values, so extending them (concatenate, slice assignment) never changes the stored entry.
Caches that cannot be trimmed (ArraysCache, RotatingKVCache past its window) are only served
from an exact checkpoint: an entry that is a prefix of the prompt, used whole.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from server.model import kv_state
from server.model.kv_state import cache_len, cache_nbytes, snapshot, trimmable

from . import disk_writes
from .disk import DiskTier
from .disk_health import DEFAULT_RETRY_S, DiskHealth
from .disk_index import entry_row, index_row
from .entry_format import Compat, tokens_key
from .fingerprint import model_fingerprint, tokenizer_fingerprint
from .policy import DEFAULT_DISK_BYTES, Lookup, choose, default_ram_bytes
from .preread import ReadAhead
from .ram_tier import Entry, RamTier
from .seam import check_tier
from .trie import as_tokens
from .writer import WriteBehind

log = logging.getLogger(__name__)


class PrefixStore:
    """Longest-shared-prefix KV cache for one model. See `lookup` and `store` for the contract."""

    def __init__(
        self,
        model: Any,
        *,
        model_id: str,
        tokenizer_id: str,
        ram_bytes: int | None = None,
        disk_root: str | os.PathLike | None = None,
        disk_bytes: int = DEFAULT_DISK_BYTES,
        lazy_disk: bool = True,
        min_disk_gain: int = 256,
        write_delay: float | None = None,
        write_bytes_per_hour: int | None = None,
        private_writes: bool = False,
        disk_retry_s: float = DEFAULT_RETRY_S,
        read_ahead: ReadAhead | None = None,
    ):
        self.model = model
        self.model_id = model_id
        self.lazy_disk = lazy_disk
        # Read a file only when it beats RAM by this many tokens: a load costs about as much
        # as prefilling a few hundred tokens on a large model.
        self.min_disk_gain = min_disk_gain
        self.lock = threading.RLock()
        self.claimed: set[int] = set()  # ids of the entries being written (disk_writes)
        self.ram = RamTier(default_ram_bytes() if ram_bytes is None else int(ram_bytes))
        self.disk: DiskTier | None = None
        self.disk_health = DiskHealth(disk_retry_s)  # a failing disk: RAM only for a while
        self.restored: dict = {"mode": "lazy" if lazy_disk else "eager", "seconds": None}
        if disk_root is not None:
            compat = Compat.current(model_id, tokenizer_id)
            started = time.perf_counter()
            self.disk = DiskTier(Path(disk_root) / model_id, compat, disk_bytes, read_ahead)
            self.restored.update(seconds=round(time.perf_counter() - started, 3), at=time.time())
        elif read_ahead is not None:
            read_ahead.drop()
        self._counters = dict.fromkeys(
            ("hits", "ram_hits", "disk_hits", "misses", "lookup_tokens", "tokens_reused"), 0
        )
        self._prefill_tokens = 0
        self._prefill_seconds = 0.0
        # None: entries reach disk only on flush (graceful stop).
        self.writer: WriteBehind | None = None
        if self.disk is not None and write_delay is not None:
            self.writer = WriteBehind(self.write_dirty, write_delay, write_bytes_per_hour)
        # The writer reads copies only (for MLX CUDA: `kv_state.host_reads_move_buffers`).
        self.private_writes = private_writes and self.writer is not None
        self.written_behind = 0  # bytes the writer thread put on disk
        self.write_bps: float | None = None  # measured, to keep the stop's flush in budget

    @classmethod
    def for_model(
        cls,
        model: Any,
        model_dir: str | os.PathLike,
        *,
        chat_template: str | None = None,
        variant: str = "",
        **kwargs,
    ) -> PrefixStore:
        """Fingerprints from the model folder; `disk_root` is e.g. `$MLXCTL_HOME/cache/kv`."""
        return cls(
            model,
            model_id=model_fingerprint(model_dir, variant),
            tokenizer_id=tokenizer_fingerprint(model_dir, chat_template),
            **kwargs,
        )

    # the generation path

    def lookup(self, tokens) -> Lookup:
        """The cached state sharing the longest prefix with `tokens` (RAM, then disk)."""
        tokens = as_tokens(tokens)
        limit = len(tokens) - 1  # keep one token to prefill: generation needs its logits
        with self.lock:
            found = self.ram.trie.candidates(tokens)
            key, usable = choose(found, limit, lambda k: self.ram.entries[k].trimmable)
        source = "ram"
        if self.disk is not None and self.lazy_disk and limit > 0 and self.disk_health.usable():
            # Only the index is searched here; a file is read when it beats RAM.
            disk_key, disk_usable = choose(self.disk.candidates(tokens), limit, self.disk.trimmable)
            if disk_key is not None and disk_usable >= usable + self.min_disk_gain:
                try:
                    ram_key = self._load_from_disk(disk_key)
                except Exception as exc:  # costs this entry, never the request
                    ram_key = None
                    self.disk_health.failed("read", exc)
                if ram_key is not None:
                    key, usable, source = ram_key, disk_usable, "disk"
        with self.lock:
            entry = self.ram.entries.get(key) if key is not None and usable > 0 else None
            cache = snapshot(entry.cache, usable, detach=False) if entry is not None else None
            self._counters["lookup_tokens"] += len(tokens)
            if entry is None or cache is None:
                self._counters["misses"] += 1
                return Lookup(self._fresh_cache(), 0, "miss")
            self.ram.touch(key)
            self._counters["hits"] += 1
            self._counters[f"{source}_hits"] += 1
            self._counters["tokens_reused"] += usable
            return Lookup(cache, usable, source)

    def store(self, tokens, cache: list[Any], kind: str = "prompt") -> bool:
        """Keep a copy of `cache`'s state for `tokens` (the ids whose KV it holds, or a prefix
        of them when it can be trimmed; extra trailing ids are ignored). `kind="system"`: a
        shared system+tools checkpoint, which a longer untrimmable entry does not replace.
        False when it was not kept."""
        tokens = as_tokens(tokens)
        n = cache_len(cache)
        if n > len(tokens) and trimmable(cache):
            n = len(tokens)  # e.g. the prompt of a cache that also holds the reply
        if n > len(tokens) or n == 0:
            log.warning("kv cache: not storing %d cached tokens for %d ids", n, len(tokens))
            return False
        tokens = tokens[:n].copy()
        kept = snapshot(cache, n)
        if kept is None or (nbytes := cache_nbytes(kept)) > self.ram.budget:
            return False
        # The writer's copy is not counted in the budget: it lives until the next write pass.
        mine = kv_state.writer_copy(kept) if self.private_writes else None
        with self.lock:
            kept_now = self.ram.insert(
                tokens, kept, nbytes, on_disk=False, kind=kind, to_write=mine
            )
        if kept_now and self.writer is not None:
            self.writer.poke()
        return kept_now

    def record_prefill(self, tokens: int, seconds: float) -> None:
        """The worker's measured prefill speed, to estimate the seconds the cache saved."""
        with self.lock:
            self._prefill_tokens += tokens
            self._prefill_seconds += seconds

    # persistence

    def dirty(self) -> list[Entry]:
        """RAM entries not on disk yet, most recent first."""
        with self.lock:
            return self.ram.dirty()

    def write_dirty(self, stop: threading.Event | None = None, deadline: float | None = None):
        """Dirty entries to disk, most recent first (`disk_writes.write_dirty`)."""
        return disk_writes.write_dirty(self, stop, deadline)

    def flush(self, budget_s: float | None = None) -> int:
        """Graceful stop: the newest entries first, within `budget_s` (`disk_writes.flush`)."""
        return disk_writes.flush(self, budget_s)

    def restore(self, max_bytes=None, should_stop=None, mode: str = "eager") -> int:
        """Load disk entries into RAM, most recent first, while they fit (and until
        `should_stop()`, checked between entries). Returns count."""
        if self.disk is None or not self.disk_health.usable():
            self.drop_read_ahead()
            return 0
        budget = self.ram.budget if max_bytes is None else min(max_bytes, self.ram.budget)
        started = time.perf_counter()
        loaded = 0
        stopped = False
        entries = self.disk.entries()
        for key in self.disk.recent_keys():
            if should_stop is not None and should_stop():
                stopped = True
                break
            with self.lock:
                if key in self.ram.entries:
                    continue
                if self.ram.bytes + entries[key].get("bytes", 0) > budget:
                    break
            # Keep the recorded use times, so LRU order survives the restart.
            try:
                found = self._load_from_disk(key, last_used=entries[key].get("last_used"))
            except Exception as exc:  # a failing disk ends the restore, not the worker
                self.disk_health.failed("read", exc)
                break
            loaded += found is not None
        with self.lock:
            self.ram.order_by_use()
        if not stopped:  # what was read ahead and not loaded did not fit: free it now
            self.drop_read_ahead()
        seconds, total = time.perf_counter() - started, loaded
        if mode == "lazy":  # lazy restores come in passes (the newest entry before ready): add
            total += self.restored.get("entries") or 0
            seconds += self.restored.get("seconds") or 0.0
        self.restored = {
            "mode": mode,
            "seconds": round(seconds, 3),
            "at": time.time(),
            "entries": total,
        }
        log.info("kv cache: restored %d entries from disk", loaded)
        return loaded

    def drop_read_ahead(self) -> None:
        """Free the bytes read ahead at start-up that no load took."""
        if self.disk is not None and self.disk.read_ahead is not None:
            self.disk.read_ahead.drop()

    # management (any thread)

    def stats(self) -> dict:
        with self.lock:
            c = dict(self._counters)
            lookups = c["hits"] + c["misses"]
            tps = self._prefill_tokens / self._prefill_seconds if self._prefill_seconds else None
            out = {
                "ram": {
                    "entries": len(self.ram.entries),
                    "bytes": self.ram.bytes,
                    "budget_bytes": self.ram.budget,
                },
                **c,
                "hit_rate": c["hits"] / lookups if lookups else 0.0,
                "token_reuse_rate": c["tokens_reused"] / c["lookup_tokens"]
                if c["lookup_tokens"]
                else 0.0,
                "prefill_tokens_per_second": tps,
                "prefill_seconds_saved": c["tokens_reused"] / tps if tps else None,
                "dirty_entries": len(self.ram.dirty()),
                "write_behind_s": None if self.writer is None else self.writer.delay,
                "bytes_written_behind": self.written_behind,
                "restore": dict(self.restored),
            }
        if self.disk is not None:
            ahead = self.disk.read_ahead
            out["disk"] = {
                **self.disk.stats(),
                "error": self.disk_health.status(),
                "read_ahead": None if ahead is None else ahead.stats(),
            }
        else:
            out["disk"] = None
        return out

    def list_entries(self) -> list[dict]:
        """RAM and disk entries, most recently used first: tier, id, tokens, bytes, times, model."""
        with self.lock:
            rows = [
                entry_row("ram", k, len(e.tokens), e.nbytes, e.created, e.last_used, self.model_id)
                for k, e in self.ram.entries.items()
            ]
        if self.disk is not None:
            rows += [index_row(k, e, e.get("model", "")) for k, e in self.disk.entries().items()]
        rows.sort(key=lambda r: r["last_used"], reverse=True)
        return rows

    def clear(self, tier: str = "both") -> int:
        """Drop entries of `tier` ("ram", "disk" or "both"); returns bytes freed."""
        check_tier(tier)
        freed = 0
        if tier in ("ram", "both"):
            with self.lock:
                freed += self.ram.clear()
        if tier in ("disk", "both") and self.disk is not None:
            freed += self.disk.clear()
            with self.lock:
                for e in self.ram.entries.values():
                    e.on_disk = False
        return freed

    def prune(self, older_than_seconds: float, tier: str = "both") -> int:
        """Drop entries not used for `older_than_seconds`; returns bytes freed."""
        cutoff = time.time() - older_than_seconds
        freed = 0
        if tier in ("ram", "both"):
            with self.lock:
                for key in [k for k, e in self.ram.entries.items() if e.last_used < cutoff]:
                    freed += self.ram.remove(key)
        if tier in ("disk", "both") and self.disk is not None:
            freed += self.disk.prune(older_than_seconds)
        return freed

    # internals

    def _fresh_cache(self) -> list[Any]:
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.model)

    def _load_from_disk(self, key: str, last_used: float | None = None) -> str | None:
        """Bring disk entry `key` into RAM (no lock held during the read); its RAM key or None.

        `last_used` given (a restore): keep that time rather than marking the entry used now."""
        disk = self.disk
        assert disk is not None, "only a store with a disk tier loads from it"
        t0 = time.perf_counter()
        loaded = disk.load(key, touch=last_used is None)
        if loaded is None:
            return None
        tokens, cache = loaded
        nbytes = cache_nbytes(cache)
        self.disk_health.worked()
        with self.lock:
            if nbytes > self.ram.budget:
                return None
            self.ram.insert(tokens, cache, nbytes, on_disk=True, kind=disk.kind(key))
            ram_key = tokens_key(tokens)
            if ram_key not in self.ram.entries:
                # Served by a longer RAM entry after all (inserted since the search).
                return None
            if last_used is not None:
                self.ram.entries[ram_key].last_used = last_used
        log.info(
            "kv cache: loaded %d tokens from disk in %.3fs", len(tokens), time.perf_counter() - t0
        )
        return ram_key
