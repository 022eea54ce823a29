"""The worker's prefix KV cache built from its Settings: a PrefixStore behind the seam.

`cache_factory(settings)` returns the `f(loaded)` that `Engine` calls on the generation thread
after the model loads: it opens the store and restores the disk tier before /health says ready.
Its `prepare(model_path)`, called before the load, reads the newest disk entries meanwhile.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from server.prefix_cache.adapter import StoreAdapter
from server.prefix_cache.policy import default_ram_bytes
from server.prefix_cache.preread import ReadAhead, start_read_ahead
from server.settings import Settings, stop_budget

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
    if getattr(loaded, "shard", ""):
        parts.append(loaded.shard)  # a rank's KV is its shard: its own entries, its own folder
    return "-".join(parts)


def _model_dir(path: str) -> Path:
    """The local folder of the loaded model (a repo id was downloaded by mlx-lm at load)."""
    if Path(path).is_dir():
        return Path(path)
    from mlx_lm.utils import _download

    return Path(_download(path))


def _local_model_dir(path: str) -> Path | None:
    """The model's folder if it is already here (a local folder or a downloaded repo)."""
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # not downloaded yet, or not a repo id: the load will say
        return None


class SettingsCacheFactory:
    """The `f(loaded) -> StoreAdapter` for `Engine`, with a `prepare` (`seam.Prepares`) that
    starts the disk tier's read-ahead before the load."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.read_ahead: ReadAhead | None = None

    def prepare(self, model_path: str) -> None:
        """Before the load, on the engine's thread: start reading the newest disk entries."""
        settings = self.settings
        if not settings.cache_dir or settings.cache_disk_bytes == 0:
            return
        model_dir = _local_model_dir(model_path)
        if model_dir is None:
            return
        budget = settings.cache_ram_bytes
        budget = default_ram_bytes() if budget is None else int(budget)
        self.read_ahead = start_read_ahead(settings.cache_dir, model_dir, budget)

    def __call__(self, loaded) -> StoreAdapter:
        return _build(self.settings, loaded, self.read_ahead)


def cache_factory(settings: Settings) -> SettingsCacheFactory | None:
    """The factory for `Engine`, or None when the cache is off."""
    if not settings.cache_enabled:
        return None
    return SettingsCacheFactory(settings)


def _build(settings: Settings, loaded, read_ahead: ReadAhead | None) -> StoreAdapter:
    """The store for the loaded model (on the generation thread), given what was read ahead."""
    from server.model.kv_state import host_reads_move_buffers

    from .disk_index import ensure_dir
    from .store import PrefixStore

    kwargs: dict[str, Any] = {
        "ram_bytes": settings.cache_ram_bytes,
        "write_delay": settings.cache_write_behind_s,
        "write_bytes_per_hour": settings.cache_write_bytes_per_hour,
        "private_writes": host_reads_move_buffers(),
        "disk_retry_s": settings.cache_disk_retry_s,
        "read_ahead": read_ahead,
    }
    if settings.cache_dir and settings.cache_disk_bytes != 0:
        kwargs["disk_root"] = Path(settings.cache_dir).expanduser()
        if settings.cache_disk_bytes is not None:
            kwargs["disk_bytes"] = settings.cache_disk_bytes

    def open_store(**kw) -> PrefixStore:
        if kw.get("disk_root") is not None:
            # Private, like each model's folder in it: the files hold prompts' content.
            ensure_dir(kw["disk_root"])
        return PrefixStore.for_model(
            loaded.model,
            _model_dir(loaded.path),
            chat_template=getattr(loaded.tokenizer, "chat_template", None),
            variant=model_variant(loaded),
            **kw,
        )

    try:
        store = open_store(**kwargs)
    except OSError as exc:
        # An unwritable or full disk must not cost the model: serve with the RAM tier.
        log.warning("kv cache: disk tier unavailable (%s); RAM only", exc)
        kwargs.pop("disk_root", None)
        kwargs.pop("disk_bytes", None)
        kwargs.pop("read_ahead", None)
        if read_ahead is not None:
            read_ahead.drop()
        store = open_store(**kwargs)
    if store.private_writes:
        log.info("kv cache: the disk writer reads copies (host reads move MLX CUDA buffers)")
    cache = StoreAdapter(store, flush_s=stop_budget(settings)[1])
    if settings.cache_restore == "eager":
        cache.restore()
    elif store.disk is not None:
        # Lazy: only the index (token ids from file headers) is read; tensors on first use.
        log.info(
            "kv cache: disk index of %d entries read in %.2fs (lazy restore)",
            len(store.disk.recent_keys()),
            store.restored["seconds"] or 0.0,
        )
    stats = store.stats()
    log.info(
        "kv cache: RAM %d entries, budget %.1f GiB; disk %s",
        stats["ram"]["entries"],
        stats["ram"]["budget_bytes"] / 2**30,
        f"{stats['disk']['folder']}" if stats["disk"] else "off",
    )
    return cache
