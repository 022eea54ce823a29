"""A worker of several ranks under mlx.launch (`python -m server.launch --backend ring -n N`,
mlx.launch minus its busy loop) on loopback, as tests run it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from server.edge.contract import free_port_run
from tests.fixtures_worker import (
    REPO_ROOT,
    WorkerHandle,
    free_port,
    wait_healthy,
    worker_command,
)

LAUNCH = [sys.executable, "-m", "server.launch"]


@dataclass
class RanksHandle(WorkerHandle):
    """The launcher is `process`; the ranks are its children, all in one process group."""

    def rank_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if "server" in " ".join(c.cmdline())]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM to the group (launcher and ranks), wait, SIGKILL what is left."""
        pids = self.rank_pids()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
            time.sleep(0.2)
        left = [p for p in pids if psutil.pid_exists(p)]
        if left or self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        return self.process.returncode


def start_ranks(
    model_path,
    *extra_args: str,
    ranks: int = 2,
    api_key: str | None = None,
    timeout: float = 300.0,
) -> RanksHandle:
    """`mlx.launch --backend ring -n RANKS -- python -m server ...`; waits for rank 0's /health."""
    from server.edge.blas import worker_env

    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix=f"ranks-{port}-", suffix=".log")
    worker = worker_command(model_path, port, extra_args, api_key, "ranks")
    launch = [*LAUNCH, "--backend", "ring", "-n", str(ranks)]
    launch += ["--starting-port", str(free_port_run(ranks)), "--"]
    process = subprocess.Popen(
        [*launch, *worker],
        cwd=REPO_ROOT,
        env=worker_env(),
        stdin=subprocess.DEVNULL,
        stdout=fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    os.close(fd)
    handle = RanksHandle(process, port, Path(log_name), api_key)
    try:
        wait_healthy(handle, timeout)
    except RuntimeError:
        handle.stop()
        raise
    return handle
