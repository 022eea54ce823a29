"""The worker's launch contract, stdlib only: what a supervisor needs to start and find a worker.

The worker takes everything as flags; only the API key travels in the environment (argv is
readable by every user on the host).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

HOME_ENV = "MLXCTL_HOME"
API_KEY_ENV = "MLXCTL_API_KEY"
WARM_PROMPTS_ENV = "MLXCTL_WARM_PROMPTS"
HEALTH_PATH = "/health"
LOG_FILE_FLAG = "--log-file"  # a worker given it rotates its own log


def home() -> Path:
    """The mlxctl home: `$MLXCTL_HOME`, or `~/.mlxctl`."""
    override = os.environ.get(HOME_ENV)
    return Path(override).expanduser() if override else Path.home() / ".mlxctl"


def models_dir() -> Path:
    """Installed models, one folder each."""
    return home() / "models"


def kv_cache_dir() -> Path:
    """The prefix cache's disk tier (one folder per model fingerprint inside)."""
    return home() / "cache" / "kv"


def traces_dir() -> Path:
    """Request traces (`--trace-dir`, `mlxctl trace`): one JSON file per request."""
    return home() / "traces"


def responses_dir() -> Path:
    """Stored Responses API responses (`store: true`), one file each."""
    return home() / "responses"


def option_names() -> list[str]:
    """The options `worker_argv` can pass to this version of the worker (a release records them,
    so a later supervisor never hands an archived worker a flag it does not know)."""
    params = inspect.signature(worker_argv).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "python"]


def worker_argv(
    model: str,
    host: str,
    port: int,
    *,
    cache_dir: str | Path | None = None,
    cache_ram_bytes: int | None = None,
    cache_disk_bytes: int | None = None,
    responses_max_count: int | None = None,
    responses_max_bytes: int | None = None,
    allowed_hosts: str | None = None,
    model_name: str | None = None,
    progress_timeout: float | None = None,
    log_file: str | Path | None = None,
    log_max_bytes: int | None = None,
    log_backups: int | None = None,
    stop_grace_s: float | None = None,
    decode_concurrency: int | None = None,
    prompt_concurrency: int | None = None,
    turn_seconds: float | None = None,
    prefill_streams: int | None = None,
    kv_budget_bytes: int | None = None,
    speculative: str | None = None,
    draft_model: str | None = None,
    draft_cache_entries: int | None = None,
    draft_cache_bytes: int | None = None,
    ranks: int | None = None,
    hosts: str | None = None,
    hostfile: str | Path | None = None,
    backend: str | None = None,
    parallel: str | None = None,
    tool_parser: str | None = None,
    trace_dir: str | Path | None = None,
    trace_max_bytes: int | None = None,
    trace_max_files: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs the worker on host:port (None leaves the worker's default).
    Across ranks (`ranks` > 1 on this machine, or `hosts` / an mlx `hostfile`) it is the
    worker under mlx.launch (server.launch), one rank per host; rank 0 serves host:port."""
    # -P: the working directory must not shadow the installed `server` package.
    argv = [python, "-P", "-m", "server", "--model", model, "--host", host, "--port", str(port)]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    if cache_ram_bytes is not None:
        argv += ["--cache-ram-bytes", str(cache_ram_bytes)]
    if cache_disk_bytes is not None:
        argv += ["--cache-disk-bytes", str(cache_disk_bytes)]
    if responses_max_count is not None:
        argv += ["--responses-max-count", str(responses_max_count)]
    if responses_max_bytes is not None:
        argv += ["--responses-max-bytes", str(responses_max_bytes)]
    if progress_timeout is not None:
        argv += ["--progress-timeout", f"{progress_timeout:g}"]
    if model_name:
        argv += ["--model-name", model_name]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    if log_file is not None:
        argv += [LOG_FILE_FLAG, str(log_file)]
    if log_max_bytes is not None:
        argv += ["--log-max-bytes", str(log_max_bytes)]
    if log_backups is not None:
        argv += ["--log-backups", str(log_backups)]
    if stop_grace_s is not None:
        # The supervisor's SIGTERM-to-SIGKILL grace: the worker fits its stop (cache flush) in it.
        argv += ["--stop-grace", f"{stop_grace_s:g}"]
    if decode_concurrency is not None:
        argv += ["--decode-concurrency", str(decode_concurrency)]
    if prompt_concurrency is not None:
        argv += ["--prompt-concurrency", str(prompt_concurrency)]
    if turn_seconds is not None:
        argv += ["--turn-seconds", str(turn_seconds)]
    if prefill_streams:
        argv += ["--prefill-streams", str(prefill_streams)]
    if kv_budget_bytes:
        argv += ["--kv-budget-bytes", str(kv_budget_bytes)]
    if speculative:
        argv += ["--speculative", speculative]
    if draft_model:
        argv += ["--draft-model", draft_model]
    if draft_cache_entries is not None:
        argv += ["--draft-cache-entries", str(draft_cache_entries)]
    if draft_cache_bytes is not None:
        argv += ["--draft-cache-bytes", str(draft_cache_bytes)]
    if tool_parser:
        argv += ["--tool-parser", tool_parser]
    if trace_dir is not None:
        argv += ["--trace-dir", str(trace_dir)]
    if trace_max_bytes is not None:
        argv += ["--trace-max-bytes", str(trace_max_bytes)]
    if trace_max_files is not None:
        argv += ["--trace-max-files", str(trace_max_files)]
    ranks_here = ranks or 1
    if not (hosts or hostfile or ranks_here > 1):
        return argv
    argv += ["--parallel", parallel or "tensor"]
    launcher = [python, "-P", "-m", "server.launch", "--backend", backend or "ring"]
    if hostfile:
        launcher += ["--hostfile", str(hostfile)]
    elif hosts:
        launcher += ["--hosts", hosts]
    else:  # N ranks on this machine: the ring listens on N free loopback ports
        launcher += ["-n", str(ranks_here), "--starting-port", str(free_port_run(ranks_here))]
    return [*launcher, "--", *argv]


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """A port p with p .. p+n-1 free on `host` (the ring backend listens on one per rank)."""
    import socket

    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            start = probe.getsockname()[1]
        if start + n > 65535:
            continue
        held = []
        try:
            for port in range(start, start + n):
                sock = socket.socket()
                held.append(sock)
                sock.bind((host, port))
            return start
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise OSError(f"no {n} consecutive free ports on {host}")
