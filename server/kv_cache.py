"""The worker's prefix KV cache: `PrefixCache` built from the settings, plugged into the seam.

`cache_factory(settings)` returns the `f(loaded)` that `Engine` calls on the generation thread
after the model loads: it opens the cache, restores the disk tier and prefills warm prompts, all
before /health says ready.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from server.prefix_cache.adapter import SeamAdapter
from server.settings import Settings

log = logging.getLogger("server.cache")


def model_variant(loaded: Any) -> str:
    """What changes the KV values without changing the model's files: backend and weight dtype.

    On CPU the weights are upcast to float32 (and quantized ones expanded), so its KV state
    differs from Metal's; a disk entry must not cross between them.
    """
    parts = [str(getattr(loaded, "backend", "") or "")]
    if parts[0] == "cpu":
        parts.append("float32")
    if getattr(loaded, "dequantized", False):
        parts.append("dequantized")
    return "-".join(parts)


class WorkerCache(SeamAdapter):
    """The seam adapter plus what the worker's endpoints need: listing, clearing, prefill speed."""

    def __init__(self, cache, *, restore: bool = True):
        super().__init__(cache, restore=False)
        if restore and cache.disk is not None:
            self._restore()

    def _restore(self) -> None:
        started = time.perf_counter()
        count = self.cache.restore()
        tokens = sum(e["tokens"] for e in self.cache.list_entries() if e["tier"] == "ram")
        log.info(
            "kv cache: restored %d entries (%d tokens) from %s in %.2fs",
            count,
            tokens,
            self.cache.disk.folder,
            time.perf_counter() - started,
        )

    def record_prefill(self, tokens: int, seconds: float) -> None:
        self.cache.record_prefill(tokens, seconds)

    def list_entries(self) -> list[dict]:
        return self.cache.list_entries()

    def clear(self, tier: str) -> int:
        return self.cache.clear(tier)

    def close(self) -> None:
        started = time.perf_counter()
        written = self.cache.flush()
        if self.cache.disk is not None:
            log.info(
                "kv cache: flush on stop wrote %d entries in %.2fs",
                written,
                time.perf_counter() - started,
            )


def _model_dir(path: str) -> Path:
    """The local folder of the loaded model (a repo id was downloaded by mlx-lm at load)."""
    if Path(path).is_dir():
        return Path(path)
    from mlx_lm.utils import _download

    return Path(_download(path))


def cache_factory(settings: Settings):
    """The `f(loaded) -> WorkerCache` for `Engine`, or None when the cache is off."""
    if not settings.cache_enabled:
        return None

    def build(loaded) -> WorkerCache:
        from server.prefix_cache import PrefixCache
        from server.prefix_cache.disk_index import ensure_dir

        kwargs: dict[str, Any] = {"ram_bytes": settings.cache_ram_bytes}
        if settings.cache_dir and settings.cache_disk_bytes != 0:
            kwargs["disk_root"] = Path(settings.cache_dir).expanduser()
            if settings.cache_disk_bytes is not None:
                kwargs["disk_bytes"] = settings.cache_disk_bytes

        def open_cache(**kw) -> PrefixCache:
            if kw.get("disk_root") is not None:
                # Private, like each model's folder in it: the files hold prompts' content.
                ensure_dir(kw["disk_root"])
            return PrefixCache.for_model(
                loaded.model,
                _model_dir(loaded.path),
                chat_template=getattr(loaded.tokenizer, "chat_template", None),
                variant=model_variant(loaded),
                **kw,
            )

        try:
            cache = open_cache(**kwargs)
        except OSError as exc:
            # An unwritable or full disk must not cost the model: serve with the RAM tier.
            log.warning("kv cache: disk tier unavailable (%s); RAM only", exc)
            kwargs.pop("disk_root", None)
            kwargs.pop("disk_bytes", None)
            cache = open_cache(**kwargs)
        worker_cache = WorkerCache(cache)
        if settings.warm_prompts:
            from server.warm import warm_up

            warm_up(loaded, worker_cache, settings.warm_prompts, settings.prefill_step_size)
        stats = cache.stats()
        log.info(
            "kv cache: RAM %d entries, budget %.1f GiB; disk %s",
            stats["ram"]["entries"],
            stats["ram"]["budget_bytes"] / 2**30,
            f"{stats['disk']['folder']}" if stats["disk"] else "off",
        )
        return worker_cache

    return build
