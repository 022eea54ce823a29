"""What `mlxctl claude` and `mlxctl codex` share: the running worker, started when needed."""

from __future__ import annotations

from functools import partial

from mlxctl import lifecycle
from mlxctl.cli.lifecycle import _run_start
from mlxctl.errors import MlxctlError, WorkerUnavailable
from mlxctl.status import status
from mlxctl.worker_client import WorkerClient


class ClientNotFound(MlxctlError):
    exit_code = 127  # what a shell returns for a missing command


def serving() -> tuple[str, dict]:
    """The running worker's url and /v1/status, starting the service first when needed."""
    current = status()
    if not (current.running and current.health == "ok"):
        _run_start(partial(lifecycle.start, None, None), report=False)
        current = status()
    if current.url is None:
        raise WorkerUnavailable("the state file names no worker URL", "see `mlxctl status`")
    client = WorkerClient.configured(current.url, timeout=5.0)
    return current.url, client.status()
