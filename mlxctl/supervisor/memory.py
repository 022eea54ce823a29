"""Memory pressure: a Metal out-of-memory abort kills the worker outright, so act before it.

The worker's memory is the larger of its process tree's RSS and the MLX active memory it
reports. Past the soft limit the supervisor asks it to shed its RAM cache tier; past the hard
limit it restarts the worker gracefully. Sampling runs on a thread of its own (an HTTP call).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psutil

from mlxctl.errors import SupervisorError, WorkerUnavailable
from mlxctl.worker_client import WorkerClient

SOFT_FRACTION = 0.85  # of the machine's RAM, when the config says 0 (auto)
HARD_FRACTION = 0.95
SHED_COOLDOWN = 30.0  # seconds between two requests to shed
SHED_BUDGET_S = 5.0  # how long the worker may write dirty entries before it frees its RAM tier


@dataclass
class MemoryLimits:
    soft_bytes: int
    hard_bytes: int
    used_bytes: int | None = None  # the latest sample
    sheds: int = 0

    @classmethod
    def from_config(cls, soft: int, hard: int, total: int | None = None) -> MemoryLimits:
        total = total or psutil.virtual_memory().total
        return cls(soft or int(total * SOFT_FRACTION), hard or int(total * HARD_FRACTION))

    def to_dict(self) -> dict:
        return asdict(self)


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class MemoryGuard:
    """Samples the running worker every `interval`; sheds on its own, leaves restarts to the
    caller (`restart_wanted`), which owns the state machine."""

    def __init__(
        self,
        limits: MemoryLimits,
        current: Callable[[], tuple[int, str] | None],
        api_key: str | None,
        log: Callable[[str], None],
        interval: float = 2.0,
    ):
        self.limits = limits
        self.current = current  # (worker pid, base URL) while RUNNING, else None
        self.api_key = api_key
        self.log = log
        self.interval = interval
        self.restart_wanted: str | None = None
        self.last_shed = 0.0

    def start(self) -> None:
        threading.Thread(target=self._loop, name="memory", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.check()
            except Exception as exc:  # a sampling bug must not stop supervision
                self.log(f"memory check failed: {exc!r}")

    def check(self) -> None:
        worker = self.current()
        if worker is None:
            self.limits.used_bytes = None
            return
        pid, url = worker
        client = WorkerClient(url, self.api_key, timeout=2.0)
        used = max(tree_rss(pid), self._mlx_active(client))
        self.limits.used_bytes = used
        if used >= self.limits.hard_bytes and self.restart_wanted is None:
            self.restart_wanted = (
                f"memory {used >> 20} MiB past the hard limit {self.limits.hard_bytes >> 20} MiB"
            )
        elif used >= self.limits.soft_bytes and time.monotonic() - self.last_shed > SHED_COOLDOWN:
            self.last_shed = time.monotonic()
            self.limits.sheds += 1
            self.log(
                f"memory {used >> 20} MiB past the soft limit {self.limits.soft_bytes >> 20} MiB:"
                " asking the worker to shed its RAM cache tier"
            )
            # Its own thread: the shed may take the whole budget writing to disk.
            shedder = WorkerClient(url, self.api_key, timeout=SHED_BUDGET_S + 10)
            try:
                shedder.cache_shed(SHED_BUDGET_S)
            except WorkerUnavailable:  # a worker without the endpoint (older, external)
                with contextlib.suppress(SupervisorError):
                    client.cache_clear("ram")
            except SupervisorError:
                pass

    @staticmethod
    def _mlx_active(client: WorkerClient) -> int:
        try:
            memory = client.status().get("memory") or {}
        except SupervisorError:
            return 0
        active = memory.get("active_bytes") if isinstance(memory, dict) else None
        return active if isinstance(active, int) else 0


def room_for_another(limits: MemoryLimits | None, weights: int | None) -> bool:
    """Can a switch start the next worker beside the serving one? What the serving one uses now
    plus the next one's weights (unknown: as much again) must stay under the hard limit."""
    if limits is None or limits.used_bytes is None:
        return True  # not sampled yet: the memory guard still restarts past the hard limit
    need = weights if weights is not None else limits.used_bytes
    return limits.used_bytes + need <= limits.hard_bytes
