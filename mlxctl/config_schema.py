"""The config's keys: each one's path, type, default, help line and lower bound (config.py reads
and writes the file by them; `mlxctl config` lists them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    path: str
    type: type
    default: Any
    help: str
    minimum: float | None = None


SCHEMA: list[Key] = [
    Key("model", str, "", "installed model name, local MLX directory or HF id ('' = demo)"),
    Key("host", str, "127.0.0.1", "address the worker binds (non-loopback needs api_key)"),
    Key("port", int, 8080, "port the worker listens on", 1),
    Key("api_key", str, "", "key clients must send ('' = none; loopback only)"),
    Key(
        "allowed_hosts",
        str,
        "",
        "Host names served besides loopback and `host`, comma-separated ('*' = any)",
    ),
    Key(
        "tool_parser",
        str,
        "",
        "mlx-lm tool parser for the model's calls, e.g. json_tools, qwen3_coder ('' = inferred)",
    ),
    Key(
        "speculative",
        str,
        "auto",
        "drafting while one request decodes alone: auto (where it pays), copy, mtp, draft or off",
    ),
    Key(
        "draft_model",
        str,
        "",
        "a small model with the model's tokenizer that drafts for it ('' = none)",
    ),
    Key(
        "draft_cache.entries",
        int,
        4,
        "the draft model's caches of recent requests kept in RAM (0 = none)",
        0,
    ),
    Key(
        "draft_cache.max_bytes",
        int,
        4 << 30,
        "the most bytes the draft model's kept caches hold together",
        1,
    ),
    Key("restart.backoff_initial", float, 1.0, "seconds before the first restart", 0),
    Key("restart.backoff_factor", float, 2.0, "each fast failure multiplies the delay", 1),
    Key("restart.backoff_max", float, 60.0, "cap on the restart delay in seconds", 0),
    Key("restart.stable_after", float, 60.0, "uptime in seconds that resets the backoff", 0),
    Key("restart.max_fast_failures", int, 5, "fast failures in a row before FATAL", 0),
    Key("restart.health_interval", float, 2.0, "seconds between /health probes", 0.05),
    Key("restart.liveness_timeout", float, 30.0, "no /health answer this long -> restart", 0.1),
    Key(
        "restart.startup_timeout",
        float,
        0.0,
        "seconds to load before giving up (0 = auto: 300 + 30 per GiB of weights)",
        0,
    ),
    Key("restart.stop_timeout", float, 15.0, "grace between SIGTERM and SIGKILL", 0),
    Key(
        "restart.progress_timeout",
        float,
        180.0,
        "a busy generation without a token this long is stuck -> restart (0 = off)",
        0,
    ),
    Key("restart.canary_interval", float, 300.0, "idle seconds between canary requests", 0),
    Key("restart.canary_timeout", float, 60.0, "a canary without a token this long -> restart", 1),
    Key(
        "restart.start_limit",
        int,
        3,
        "FATAL starts in a row before `start` refuses until `mlxctl reset-failed` (0 = none)",
        0,
    ),
    Key("memory.soft_limit", int, 0, "worker memory that sheds the RAM cache (0 = 85% of RAM)", 0),
    Key("memory.hard_limit", int, 0, "worker memory that restarts it (0 = 95% of RAM)", 0),
    Key(
        "memory.models_budget",
        int,
        0,
        "bytes the served models may need together; the least recently used idle one stops "
        "first (0 = 85% of RAM)",
        0,
    ),
    Key("batch.decode_concurrency", int, 32, "requests that decode together in one batch", 1),
    Key("batch.prompt_concurrency", int, 8, "prompts that prefill together in one batch", 1),
    Key("batch.turn_seconds", float, 1.0, "longest decode or prefill turn while both wait", 0.05),
    Key(
        "batch.prefill_streams",
        int,
        0,
        "prompts whose chunks prefill at once, a stream each (0 = a core each on the CPU "
        "backend, at most 4; 1 on a GPU)",
        0,
    ),
    Key(
        "batch.kv_budget_bytes",
        int,
        0,
        "KV bytes running requests may hold together (0 = planned from the device's memory)",
        0,
    ),
    Key("cache.ram_bytes", int, -1, "RAM budget of the prefix KV cache (-1 = 10% of RAM)", -1),
    Key("cache.disk_bytes", int, 32 * 1024**3, "disk budget of the prefix KV cache", 0),
    Key("responses.max_count", int, 1000, "stored Responses API responses kept (0 = none)", 0),
    Key("responses.max_bytes", int, 256 * 1024**2, "disk budget of stored responses", 0),
    Key("distributed.ranks", int, 1, "ranks on this machine under mlx.launch (1 = one process)", 1),
    Key("distributed.hosts", str, "", "hosts (IPs for ring), comma-separated, one rank each"),
    Key("distributed.hostfile", str, "", "an mlx.launch hostfile (see mlx.distributed_config)"),
    Key("distributed.backend", str, "ring", "mlx.launch backend: ring, jaccl, mpi or nccl"),
    Key("distributed.parallel", str, "tensor", "how ranks split the model: tensor or pipeline"),
    Key("logs.max_bytes", int, 10 * 1024**2, "a log rotates when it reaches this size", 1024),
    Key("logs.backups", int, 3, "rotated logs kept per log", 0),
    Key("trace.enabled", bool, False, "record each request and its reply (`mlxctl trace on`)"),
    Key("trace.max_bytes", int, 256 * 1024**2, "the traces folder's bound in bytes", 1024),
    Key("trace.max_files", int, 1000, "traces kept; the oldest go first", 1),
]
KEYS = {key.path: key for key in SCHEMA}
