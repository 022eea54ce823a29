"""The state file's protocol: what the daemon writes (`run/state.json`), the CLI reads.

Also the stop request (`run/stop-request.json`): `mlxctl stop --timeout` leaves it before the
SIGTERM so the daemon knows the grace period to give its worker; and the switch request
(`run/switch-request.json`): restart, migrate and rollback ask the running supervisor to hand
over to a new worker, and read the verdict back from the state file's `switch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mlxctl import paths
from mlxctl.errors import StateError
from mlxctl.system import statefile
from mlxctl.system.identity import Identity

STOP_REQUEST = "stop-request.json"
SWITCH_REQUEST = "switch-request.json"
FAILED_STARTS = "failed-starts.json"  # starts in a row that ended FATAL
VERSION = 1


@dataclass
class SupervisorState:
    state: str = "STOPPED"
    supervisor: dict | None = None  # Identity.to_dict()
    supervisor_started_at: float | None = None
    start_id: str = ""
    worker: dict | None = None  # Identity.to_dict()
    worker_started_at: float | None = None
    running_since: float | None = None
    restarts: int = 0
    last_exit: dict | None = None  # {"code", "reason", "at"}
    fatal_reason: str | None = None
    error: str | None = None  # a failure before any worker ran (the port was taken)
    model: str | None = None
    model_path: str | None = None
    host: str | None = None  # the front door's address: the service's, kept by every switch
    port: int | None = None
    url: str | None = None
    worker_port: int | None = None  # the serving worker's private loopback port
    worker_url: str | None = None
    switch: dict | None = None  # the latest switch: {"id", "ok" (None while it runs), "detail"}
    # The config's "host:port" when this address was chosen: while it still says so, the
    # address is the service's (restarts, migrations and rollbacks keep it).
    configured_address: str | None = None
    release: str | None = None
    memory_limits: dict | None = None  # MemoryLimits.to_dict(): soft, hard, used, sheds
    # One row per served model, the default first: name, state, worker, requests, cache_dir...
    models: list = field(default_factory=list)
    updated_at: float | None = None
    version: int = VERSION

    @property
    def supervisor_identity(self) -> Identity | None:
        return Identity.from_dict(self.supervisor)

    @property
    def worker_identity(self) -> Identity | None:
        return Identity.from_dict(self.worker)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> SupervisorState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read() -> SupervisorState | None:
    """The state file's contents; None when there is none; StateError when it is damaged."""
    data = statefile.read_json(paths.state_file())
    return None if data is None else SupervisorState.from_dict(data)


def read_or_none() -> SupervisorState | None:
    """Like `read`, but a damaged file counts as none (for callers that only look for pids)."""
    try:
        return read()
    except StateError:
        return None


def configured_address(settings: dict) -> str:
    return f"{settings['host']}:{settings['port']}"


def service_address(settings: dict, host: str | None, port: int | None) -> tuple[str, int]:
    """Where to serve: what was given, else the address the service last ran on (until the
    user changes the config's), else the config's."""
    saved = read_or_none()
    ours = saved is not None and saved.configured_address == configured_address(settings)
    if saved is not None and ours and saved.host and saved.port:
        host, port = host or saved.host, port or saved.port
    return host or settings["host"], port or settings["port"]


def write(state: SupervisorState) -> None:
    statefile.write_json(paths.state_file(), state.to_dict())


def request_stop(timeout: float) -> None:
    statefile.write_json(paths.run_dir() / STOP_REQUEST, {"timeout": timeout})


def take_stop_request() -> float | None:
    """The grace period `mlxctl stop` asked for (consuming the request), or None."""
    path = paths.run_dir() / STOP_REQUEST
    try:
        request = statefile.read_json(path) or {}
        path.unlink(missing_ok=True)
    except (StateError, OSError):
        return None
    timeout = request.get("timeout")
    return float(timeout) if isinstance(timeout, (int, float)) else None


def failed_starts() -> dict:
    """{"count": N, "reason": the last FATAL reason}; count 0 when none (or unreadable)."""
    try:
        data = statefile.read_json(paths.run_dir() / FAILED_STARTS) or {}
    except StateError:
        data = {}
    count = data.get("count")
    return {"count": count if isinstance(count, int) else 0, "reason": data.get("reason")}


def record_failed_start(reason: str | None) -> int:
    count = failed_starts()["count"] + 1
    statefile.write_json(paths.run_dir() / FAILED_STARTS, {"count": count, "reason": reason})
    return count


def reset_failed_starts() -> None:
    (paths.run_dir() / FAILED_STARTS).unlink(missing_ok=True)


def request_switch(request: dict) -> None:
    statefile.write_json(paths.run_dir() / SWITCH_REQUEST, request)


def take_switch_request() -> dict | None:
    """A switch `mlxctl` asked for (consuming it), or None."""
    path = paths.run_dir() / SWITCH_REQUEST
    if not path.exists():
        return None
    try:
        request = statefile.read_json(path)
        path.unlink(missing_ok=True)
    except (StateError, OSError):
        return None
    return request if isinstance(request, dict) and request.get("id") else None


def clear_requests() -> None:
    """At a supervisor's start: requests left for one that is gone are not for this one."""
    for name in (STOP_REQUEST, SWITCH_REQUEST):
        (paths.run_dir() / name).unlink(missing_ok=True)
