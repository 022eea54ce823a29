"""The core of `mlxctl status`: what the state file, the process table and the worker say.

Kept light on purpose (no httpx, no tomlkit unless the worker asks for its key): `status` must
answer in a blink, and scripts poll it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import psutil

from mlxctl import exit_codes, paths
from mlxctl.errors import MlxctlError, StateError, WorkerRefused
from mlxctl.logs import tail
from mlxctl.supervisor import state as state_file
from mlxctl.system import identity

if TYPE_CHECKING:
    from mlxctl.worker_client import WorkerClient

PROBE_TIMEOUT = 0.5
LOG_TAIL_LINES = 20


def _system_memory() -> dict:
    vm = psutil.virtual_memory()
    return {
        "total_bytes": vm.total,
        "used_bytes": vm.total - vm.available,
        "available_bytes": vm.available,
    }


@dataclass
class Status:
    """One status report; `to_dict()` is the `--json` shape, `exit_code` the command's code."""

    state: str = "STOPPED"
    detail: str | None = None
    worker_pid: int | None = None
    supervisor_pid: int | None = None
    restarts: int = 0
    uptime_seconds: float | None = None
    url: str | None = None  # the front door: the service's address
    port: int | None = None
    worker_url: str | None = None  # the serving worker's private loopback address
    worker_port: int | None = None
    model: str | None = None
    model_path: str | None = None
    release: str | None = None
    health: str | None = None
    last_exit: dict | None = None
    fatal_reason: str | None = None
    worker_rss_bytes: int | None = None
    memory: dict | None = None
    system_memory: dict = field(default_factory=_system_memory)
    cache: dict | None = None
    queue_depth: int | None = None
    requests: dict | None = None
    tokens_reused: int | None = None
    cache_hit_rate: float | None = None
    backend: str | None = None
    context_length: int | None = None
    images: bool | None = None  # whether the loaded model reads images
    scheduler: dict | None = None  # the worker's batch: mode, running, waiting, tokens/s
    recent: list = field(default_factory=list)  # the worker's last requests, newest first
    memory_limits: dict | None = None  # soft/hard limits, the latest sample, sheds so far
    # Across machines: [{rank, host, pid, rss_bytes}] (rss null for another host's rank).
    ranks: list = field(default_factory=list)
    log_tail: list = field(default_factory=list)  # FATAL: the worker log's last lines
    # One row per served model (the default first): name, state, pid, rss_bytes, cache_bytes,
    # requests, aliases... ([models.NAME] entries; just the default without them).
    models: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = {"RUNNING": exit_codes.OK, "UNKNOWN": exit_codes.UNKNOWN}
        return codes.get(self.state, exit_codes.NOT_RUNNING)

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    def to_dict(self) -> dict:
        return asdict(self)


def status(probe: bool = True) -> Status:
    """The supervisor's and worker's state; with `probe`, also asks a RUNNING worker."""
    result = Status()
    try:
        saved = state_file.read()
    except StateError as exc:
        result.state, result.detail = "UNKNOWN", str(exc)
        return result
    if saved is None:
        return result
    result.restarts = saved.restarts
    keys = ("url", "port", "model", "model_path", "release", "last_exit", "fatal_reason")
    for key in (*keys, "memory_limits", "worker_url", "worker_port"):
        setattr(result, key, getattr(saved, key))
    sup = identity.process_of(saved.supervisor_identity)
    worker = identity.process_of(saved.worker_identity)
    result.state = saved.state or "UNKNOWN"
    if saved.error:
        result.fatal_reason = saved.error
    if result.state == "FATAL":
        result.log_tail = tail(paths.worker_log(), LOG_TAIL_LINES)  # what `start` shows too
    if sup is None:
        if worker is not None:
            # The supervisor died but its worker did not (yet): nobody is in charge.
            result.state, result.worker_pid = "UNKNOWN", worker.pid
            result.detail = "the supervisor is gone but its worker is alive"
        elif result.state not in ("STOPPED", "FATAL"):
            result.state, result.detail = "STOPPED", "the supervisor exited without cleaning up"
        return result
    result.supervisor_pid = sup.pid
    result.models = [_model_row(row) for row in saved.models if isinstance(row, dict)]
    if worker is not None:
        result.worker_pid = worker.pid
        with contextlib.suppress(psutil.Error):
            result.worker_rss_bytes = worker.memory_info().rss
    if saved.running_since and result.running:
        result.uptime_seconds = round(time.time() - saved.running_since, 1)
    asked = saved.worker_url or saved.url  # the worker itself: never held at the front door
    if probe and result.running and asked:
        _ask_worker(result, asked)
        result.ranks = _with_rss(result.ranks, worker)
        here = [r["rss_bytes"] for r in result.ranks if r["rss_bytes"]]
        if here and result.worker_rss_bytes is not None:
            result.worker_rss_bytes += sum(here)  # the launcher and this host's ranks
    return result


def _model_row(row: dict) -> dict:
    """A model's row as the daemon wrote it, with its worker's memory and its cache's size."""
    worker = identity.process_of(identity.Identity.from_dict(row.get("worker")))
    rss = None
    if worker is not None:
        with contextlib.suppress(psutil.Error):
            tree = [worker, *worker.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree)
    cache = row.get("cache_dir")
    return {**row, "pid": worker.pid if worker else None, "rss_bytes": rss,
            "cache_bytes": _folder_bytes(cache) if isinstance(cache, str) else None}  # fmt: skip


def _folder_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _with_rss(ranks: list, worker: psutil.Process | None) -> list:
    """The worker's ranks with the RSS of those in its process tree here (the others run on
    other hosts: a pid there says nothing here)."""
    local: dict[int, psutil.Process] = {}
    if worker is not None:
        with contextlib.suppress(psutil.Error):
            local = {p.pid: p for p in worker.children(recursive=True)}
    rows = []
    for row in ranks:
        rss = None
        if row.get("pid") in local:
            with contextlib.suppress(psutil.Error):
                rss = local[row["pid"]].memory_info().rss
        rows.append({**row, "rss_bytes": rss})
    return rows


def _ask_worker(result: Status, url: str) -> None:
    """Health and /v1/status from a live worker; quick, so `status` stays fast."""
    # Here, not at the top: with no worker running, `status` never loads the HTTP client.
    from mlxctl.worker_client import WorkerClient, probe_health

    client = WorkerClient(url, timeout=PROBE_TIMEOUT)
    try:
        code = client.health()
        if code != 200:
            result.health = "loading" if code == 503 else f"http {code}"
            said = probe_health(f"{url}/health", PROBE_TIMEOUT) if code == 503 else None
            if said is not None and (said.stuck or said.failed):
                result.health = f"stuck: {said.stuck}" if said.stuck else f"failed: {said.failed}"
            return
        report = _report(client, url)
    except MlxctlError:
        result.health = "unreachable"
        return
    result.health = "ok"
    if not report:
        return
    result.memory, result.cache = report.get("memory"), report.get("cache")
    result.queue_depth, result.requests = report.get("queue_depth"), report.get("requests")
    result.backend, result.context_length = report.get("backend"), report.get("context_length")
    result.images = report["images"] if isinstance(report.get("images"), bool) else None
    result.recent = [r for r in report.get("recent") or [] if isinstance(r, dict)]
    ranks = report.get("ranks")
    result.ranks = [r for r in ranks if isinstance(r, dict)] if isinstance(ranks, list) else []
    scheduler = report.get("scheduler")
    result.scheduler = scheduler if isinstance(scheduler, dict) else None
    requests = report.get("requests") or {}
    prompt, cached = requests.get("prompt_tokens"), requests.get("cached_tokens")
    if isinstance(cached, int):
        result.tokens_reused = cached
        result.cache_hit_rate = round(cached / prompt, 4) if prompt else None


def _report(client: WorkerClient, url: str) -> dict | None:
    """/v1/status, with the key only when the worker asks (loading the config costs tomlkit)."""
    try:
        try:
            return client.status()
        except WorkerRefused as exc:
            if exc.status != 401:
                return None
            return type(client).configured(url, timeout=PROBE_TIMEOUT).status()
    except (WorkerRefused, ValueError):
        return None  # healthy, it just says nothing more
