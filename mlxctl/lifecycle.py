"""The core of `mlxctl start/restart` (and `start --foreground`): no Typer, no Rich, no mlx.

The CLI talks to the supervisor through the state file (read), the supervisor lock (is one
running?) and signals (stop); every process it touches is checked by identity first.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlxctl import paths
from mlxctl.errors import (
    PortInUseError,
    StartFailedError,
    StartLimitError,
    SupervisorError,
)
from mlxctl.logs import tail
from mlxctl.status import LOG_TAIL_LINES, Status, status
from mlxctl.stop import stop, stop_orphan
from mlxctl.supervisor import state as state_file
from mlxctl.system import identity, processes
from mlxctl.system.lock import FileLock, is_held

if TYPE_CHECKING:
    from mlxctl.models.pull import Progress

POLL_SECONDS = 0.1
DEMO_MODEL = "demo"  # server.model.loading.DEMO_MODEL, without importing the model loader
DAEMON_MODULE = "mlxctl.supervisor.daemon"


def choose_model(model: str | None = None, release: object | None = None, settings=None) -> str:
    """What to serve: the one given, else the release's, else the configured one, else the demo."""
    if model:
        return model
    if settings is None:
        from mlxctl import config  # tomlkit: only when the caller has not loaded it

        settings = config.load()
    return getattr(release, "model", "") or settings["model"] or DEMO_MODEL


def resolve_model(name: str, pull_progress: Progress | None = None) -> str:
    """The path/id the worker loads; the demo model is pulled first when missing."""
    from mlxctl.errors import ModelError
    from mlxctl.models import registry

    try:
        return registry.resolve(name)
    except ModelError:
        if name != registry.DEMO_MODEL:
            raise
    from mlxctl.models.pull import pull

    info, _ = pull(registry.DEMO_MODEL, pull_progress)
    return info.path


def current_release():
    """The release `start` runs, or None before any release was recorded."""
    from mlxctl.releases.store import ReleaseStore

    return ReleaseStore().current()


def _supervisor_alive() -> bool:
    saved = state_file.read_or_none()
    if identity.is_alive(saved.supervisor_identity if saved else None):
        return True
    return is_held(paths.supervisor_lock())


@dataclass
class _Launch:
    """What `start` and `start --foreground` both work out before the daemon runs."""

    name: str
    model_path: str
    host: str
    port: int
    release_id: str
    overrides: dict[str, str] = field(default_factory=dict)  # config keys set for this run

    def daemon_argv(self, start_id: str = "", foreground: bool = False) -> list[str]:
        argv = [sys.executable, "-m", DAEMON_MODULE, "--model", self.model_path]
        argv += ["--model-name", self.name, "--host", self.host, "--port", str(self.port)]
        argv += ["--start-id", start_id, "--release", self.release_id]
        for key, value in self.overrides.items():
            argv += ["--set", f"{key}={value}"]
        return argv + (["--foreground"] if foreground else [])


def apply_overrides(settings: dict, overrides: Mapping[str, object] | None) -> dict[str, str]:
    """Config values given on the command line for this run (`start --ranks 2`), parsed and
    checked into `settings`; returns them as text for the daemon."""
    from mlxctl import config

    given = {k: str(v) for k, v in (overrides or {}).items() if v is not None}
    for key, text in given.items():
        settings[key] = config.parse_value(key, text)
    config.distributed_options(settings)  # a bad backend or split fails here, not in the daemon
    return given


def _prepare(
    settings: dict,
    model: str | None,
    port: int | None,
    host: str | None,
    pull_progress: Progress | None = None,
    overrides: Mapping[str, object] | None = None,
) -> _Launch:
    """Under the start lock with no supervisor alive: the model resolved, the port checked."""
    given = apply_overrides(settings, overrides)
    release = current_release()
    name = choose_model(model, release, settings)
    host, port = state_file.service_address(settings, host, port)
    launch = _Launch(name, "", host, port, release.id if release else "")
    launch.model_path = resolve_model(name, pull_progress)
    launch.overrides = given
    processes.require_free_port(launch.host, launch.port)
    return launch


def _daemon_env() -> dict[str, str]:
    return {**os.environ, identity.NONCE_ENV: identity.new_nonce()}


# -- start -------------------------------------------------------------------------------------


@dataclass
class StartOutcome:
    already_running: bool
    status: Status
    notes: list[str] = field(default_factory=list)


def _await_handshake(process, start_id: str, timeout: float = 30.0) -> bool:
    """Wait until our daemon owns the state file: True; False when another one won the lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = state_file.read_or_none()
        if saved is not None and saved.start_id == start_id:
            return True
        if process.poll() is not None:
            if _supervisor_alive():
                return False  # another supervisor won the lock: use that one
            lines = tail(paths.supervisor_log(), 5)
            raise SupervisorError(
                f"the supervisor exited with code {process.returncode} before it started"
                + (f": {lines[-1]}" if lines else ""),
                hint="see `mlxctl logs --supervisor`",
            )
        time.sleep(0.05)
    raise SupervisorError(
        f"the supervisor did not come up within {timeout:g}s",
        hint="see `mlxctl logs --supervisor`",
    )


def start(
    model: str | None = None,
    port: int | None = None,
    host: str | None = None,
    on_wait: Callable[[float, str], None] | None = None,
    pull_progress: Progress | None = None,
    overrides: Mapping[str, object] | None = None,
) -> StartOutcome:
    """Start the supervisor unless one runs; return once the worker answers /health 200."""
    from mlxctl import config

    settings = config.load()
    paths.ensure_private_dir(paths.run_dir())
    already = False
    with FileLock(paths.start_lock()):
        if _supervisor_alive():
            already = True
        else:
            _check_start_limit(settings["restart.start_limit"])
            stop_orphan(settings["restart.stop_timeout"])
            launch = _prepare(settings, model, port, host, pull_progress, overrides)
            start_id = uuid.uuid4().hex
            paths.ensure_private_dir(paths.logs_dir())
            process = processes.spawn_detached(
                launch.daemon_argv(start_id), _daemon_env(), paths.supervisor_log()
            )
            already = not _await_handshake(process, start_id)
    outcome = wait_until_ready(on_wait)
    outcome.already_running = already
    running = outcome.status.model
    if already and model and running and model != running:
        outcome.notes.append(
            f"it serves {running}, not {model}: `mlxctl restart --model {model}` to switch"
        )
    return outcome


def _check_start_limit(limit: int) -> None:
    failed = state_file.failed_starts()
    if limit and failed["count"] >= limit:
        raise StartLimitError(
            f"the last {failed['count']} starts ended FATAL ({failed['reason'] or 'see the log'});"
            " not starting again",
            hint="fix the cause (`mlxctl logs -n 100`), then `mlxctl reset-failed`",
        )


def reset_failed() -> dict:
    """Forget failed starts (the start limit) and a FATAL state left by a supervisor that exited."""
    with FileLock(paths.start_lock()):
        failed = state_file.failed_starts()
        state_file.reset_failed_starts()
        saved = state_file.read_or_none()
        was_fatal = False
        if saved is not None and saved.state == "FATAL" and not _supervisor_alive():
            saved.state, saved.fatal_reason = "STOPPED", None
            state_file.write(saved)
            was_fatal = True
    return {"failed_starts": failed["count"], "was_fatal": was_fatal}


def restart(
    model: str | None = None,
    port: int | None = None,
    timeout: float | None = None,
    on_wait: Callable[[float, str], None] | None = None,
    pull_progress: Progress | None = None,
    overrides: Mapping[str, object] | None = None,
) -> StartOutcome:
    """Start again with the same model and address unless given: behind the front door (the
    next worker beside the serving one) when the address stays, else stop, then start."""
    previous = status(probe=False)
    same_address = port is None or port == previous.port
    if previous.running and same_address and not any((overrides or {}).values()):
        from mlxctl.hand_over import hand_over

        if model:
            hand_over("restart", resolve_model(model, pull_progress), model)
        else:
            hand_over("restart")
        return StartOutcome(False, status())
    stop(timeout)
    return start(
        model or previous.model,
        port,  # None: the address the service ran on (state_file.service_address)
        on_wait=on_wait,
        pull_progress=pull_progress,
        overrides=overrides,
    )


def wait_until_ready(on_wait: Callable[[float, str], None] | None = None) -> StartOutcome:
    """Poll the state file until the worker is RUNNING (healthy) or the supervisor gave up."""
    began = time.monotonic()
    while True:
        current = status(probe=False)
        if current.running:
            return StartOutcome(False, status())
        if current.supervisor_pid is None:
            raise _start_failure(state_file.read_or_none() or state_file.SupervisorState())
        if on_wait:
            on_wait(time.monotonic() - began, _progress_line())
        time.sleep(POLL_SECONDS)


def _progress_line() -> str:
    """The worker's latest log line that says something (our own /health probes do not)."""
    for line in reversed(tail(paths.worker_log(), 30)):
        if line.startswith("--- mlxctl:"):
            break  # the lines before belong to an earlier run
        if line.strip() and "/health" not in line:
            return line
    return ""


def _start_failure(saved: state_file.SupervisorState) -> SupervisorError:
    exit_info = saved.last_exit or {}
    reason = saved.error or exit_info.get("reason") or saved.fatal_reason
    if saved.error and saved.error.startswith("port "):
        return PortInUseError(saved.error, hint="pick another with `--port N`")
    return StartFailedError(
        f"the worker did not start: {reason or 'the supervisor exited'}",
        hint="full log: `mlxctl logs -n 200` (supervisor: `mlxctl logs --supervisor`)",
        worker_exit_code=exit_info.get("code"),
        log_tail=tail(paths.worker_log(), LOG_TAIL_LINES),
    )


def run_foreground(
    model: str | None = None, port: int | None = None, overrides: Mapping[str, object] | None = None
) -> int:
    """Run the supervisor on this terminal (logs on stderr); Ctrl-C stops the worker cleanly."""
    from mlxctl import config

    settings = config.load()
    with FileLock(paths.start_lock()):
        if _supervisor_alive():
            raise SupervisorError(
                "the supervisor is already running", hint="`mlxctl stop` first, or `mlxctl status`"
            )
        _check_start_limit(settings["restart.start_limit"])  # as `start` does
        launch = _prepare(settings, model, port, None, overrides=overrides)
    # Its module entry, not an in-process call: the core never imports the daemon.
    return processes.run_attached(launch.daemon_argv(foreground=True), _daemon_env())
