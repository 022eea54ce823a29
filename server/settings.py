"""The worker's settings, from the command line (see `python -m server --help`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.edge.hosts import host_of, is_loopback, name_allowed

__all__ = ["Settings", "host_allowed", "host_of", "is_loopback", "stop_budget"]


@dataclass
class Settings:
    model: str
    model_path: str
    model_name: str = ""  # what /v1/models lists (default: derived from `model`)
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_queue: int = 16
    max_body_bytes: int = 32 * 1024 * 1024
    max_output_tokens: int | None = None
    prefill_step_size: int | None = None
    heartbeat_s: float = 5.0
    shutdown_grace_s: float = 10.0
    # SIGTERM to exit, all of it (the supervisor's stop grace): in-flight requests, then flush.
    stop_grace_s: float = 15.0
    log_level: str = "info"
    # Prefix KV cache: None budgets mean the cache's own defaults; no cache_dir, no disk tier.
    cache_enabled: bool = True
    cache_ram_bytes: int | None = None
    cache_disk_bytes: int | None = None
    cache_dir: str | None = None
    cache_write_behind_s: float | None = 2.0  # None: written on stop only
    cache_write_bytes_per_hour: int | None = None  # SSD wear budget of the write-behind
    cache_restore: str = "lazy"  # "eager": load disk entries into RAM before ready
    cache_disk_retry_s: float = 60.0  # a failed disk tier is tried again this much later
    warm_prompts: list[str] = field(default_factory=list)
    # Stored Responses API responses: None folder means $MLXCTL_HOME/responses; 0 stores none.
    responses_dir: str | None = None
    responses_max_count: int = 1000
    responses_max_bytes: int = 256 * 1024 * 1024
    # Host header names served besides loopback names and `host`; "*" serves any.
    allowed_hosts: list[str] = field(default_factory=list)
    progress_timeout: float = 180.0  # a busy generation with no progress this long is stuck
    decode_concurrency: int = 32  # sequences decoding in one batch (mlx_lm.server's default)
    prompt_concurrency: int = 8  # prompts prefilling in one batch (mlx_lm.server's default)
    turn_seconds: float = 1.0  # longest decode or prefill turn while the other side waits
    prefill_streams: int | None = None  # prompts prefilling at once, a stream each (None: auto)
    kv_budget_bytes: int | None = None  # None: admission plans on the device's memory
    speculative: str = "auto"  # drafting while one sequence decodes: auto, off, copy, mtp, draft
    draft_model_path: str | None = None  # --draft-model, resolved; None: no draft model
    draft_cache_entries: int = 4  # the draft's caches of recent requests kept in RAM
    draft_cache_bytes: int = 4 << 30  # together (a 0.6B draft: ~112 KiB/token, 2.2 GiB at 20K)
    queue_timeout_s: float = 240.0  # a non-stream request queued this long gets 429/529
    parallel: str = "tensor"  # how ranks under mlx.launch split the model: tensor or pipeline
    tool_parser: str | None = None  # an mlx-lm tool parser module; None: inferred
    batch: bool = True  # False: one request at a time, as before batching (benchmarks)
    # Request traces: None records none until turned on (then into the home's traces/).
    trace_dir: str | None = None
    trace_max_bytes: int = 256 * 1024 * 1024
    trace_max_files: int = 1000


def host_allowed(name: str, settings: Settings) -> bool:
    """Loopback names, the bind address and `allowed_hosts` (server.edge.hosts, shared with
    mlxctl)."""
    return name_allowed(name, settings.host, settings.allowed_hosts)


def stop_budget(settings: Settings) -> tuple[float, float]:
    """(grace for the running request, budget for the cache flush) within `stop_grace_s`,
    keeping a second or two for the rest of the exit."""
    total = max(2.0, settings.stop_grace_s)
    request = min(settings.shutdown_grace_s, 0.4 * total)
    return request, max(0.5, total - request - 2.0)
