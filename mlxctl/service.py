"""The core of `mlxctl start/stop/restart/status`: no Typer, no Rich, no mlx.

The CLI talks to the supervisor through the state file (read), the supervisor lock (is one
running?) and signals (stop); every process it touches is checked by identity first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from mlxctl import paths
from mlxctl.errors import PortInUseError, StartFailedError, SupervisorError
from mlxctl.logs import tail
from mlxctl.supervisor import identity, statefile
from mlxctl.supervisor.lock import FileLock

# `mlxctl status` exit codes (LSB-style).
EXIT_RUNNING = 0
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4

POLL_SECONDS = 0.1


# -- status ------------------------------------------------------------------------------------


def read_state() -> dict | None:
    return statefile.read_json(paths.state_file())


def _auth_headers() -> dict[str, str]:
    from mlxctl import config  # tomlkit: only when the worker asks for a key

    key = config.load()["api_key"]
    return {"authorization": f"Bearer {key}", "x-api-key": key} if key else {}


def _get(url: str, path: str, timeout: float, headers: dict) -> tuple[int, bytes]:
    # http.client, not httpx: `status` must answer fast and httpx alone costs ~0.1 s to import.
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _worker_report(url: str, timeout: float = 0.5) -> tuple[str, dict | None]:
    """(health, /v1/status body) from a live worker; quick, so `status` stays fast."""
    try:
        code, _ = _get(url, "/health", timeout, {})
        if code != 200:
            return ("loading" if code == 503 else f"http {code}"), None
        code, body = _get(url, "/v1/status", timeout, {})
        if code == 401:
            code, body = _get(url, "/v1/status", timeout, _auth_headers())
    except Exception:
        return "unreachable", None
    try:
        report = json.loads(body) if code == 200 else None
    except ValueError:
        report = None
    return "ok", report if isinstance(report, dict) else None


def status(probe: bool = True) -> tuple[dict, int]:
    """One status object (the `--json` shape) and the exit code that goes with it."""
    vm = psutil.virtual_memory()
    result: dict = {
        "state": "STOPPED",
        "worker_pid": None,
        "supervisor_pid": None,
        "restarts": 0,
        "uptime_seconds": None,
        "url": None,
        "model": None,
        "release": None,
        "health": None,
        "last_exit": None,
        "fatal_reason": None,
        "worker_rss_bytes": None,
        "memory": None,
        "system_memory": {"total_bytes": vm.total, "used_bytes": vm.total - vm.available},
        "cache": None,
    }
    try:
        state = read_state()
    except statefile.CorruptState as exc:
        result.update(state="UNKNOWN", detail=str(exc))
        return result, EXIT_UNKNOWN
    if state is None:
        return result, EXIT_NOT_RUNNING
    for key in ("restarts", "url", "model", "release", "last_exit", "fatal_reason"):
        result[key] = state.get(key)
    sup = identity.process_of(identity.Identity.from_dict(state.get("supervisor")))
    worker = identity.process_of(identity.Identity.from_dict(state.get("worker")))
    result["state"] = state.get("state", "UNKNOWN")
    if state.get("error"):
        result["fatal_reason"] = state["error"]
    if sup is None:
        if worker is not None:
            # The supervisor died but its worker did not (yet): nobody is in charge.
            result.update(
                state="UNKNOWN",
                worker_pid=worker.pid,
                detail="the supervisor is gone but its worker is alive",
            )
            return result, EXIT_UNKNOWN
        if result["state"] not in ("STOPPED", "FATAL"):
            result.update(state="STOPPED", detail="the supervisor exited without cleaning up")
        return result, EXIT_NOT_RUNNING
    result["supervisor_pid"] = sup.pid
    if worker is not None:
        result["worker_pid"] = worker.pid
        with contextlib.suppress(psutil.Error):
            result["worker_rss_bytes"] = worker.memory_info().rss
    if state.get("running_since") and result["state"] == "RUNNING":
        result["uptime_seconds"] = round(time.time() - state["running_since"], 1)
    if probe and result["state"] == "RUNNING" and state.get("url"):
        result["health"], report = _worker_report(state["url"])
        if report:
            result["memory"] = report.get("memory")
            result["cache"] = report.get("cache")
            result["queue_depth"] = report.get("queue_depth")
            result["requests"] = report.get("requests")
            requests = report.get("requests") or {}
            prompt, cached = requests.get("prompt_tokens"), requests.get("cached_tokens")
            if isinstance(cached, int):
                result["tokens_reused"] = cached
                result["cache_hit_rate"] = round(cached / prompt, 4) if prompt else None
    return result, EXIT_RUNNING if result["state"] == "RUNNING" else EXIT_NOT_RUNNING


# -- start -------------------------------------------------------------------------------------


@dataclass
class StartOutcome:
    already_running: bool
    status: dict
    notes: list[str] = field(default_factory=list)


def resolve_model(name: str, pull_progress: object | None = None) -> str:
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


def _supervisor_alive() -> bool:
    try:
        state = read_state() or {}
    except statefile.CorruptState:
        state = {}
    if identity.is_alive(identity.Identity.from_dict(state.get("supervisor"))):
        return True
    from mlxctl.supervisor.lock import is_held

    return is_held(paths.supervisor_lock())


def current_release():
    """The release `start` runs, or None before any release was recorded."""
    from mlxctl.releases.store import ReleaseStore

    return ReleaseStore().current()


def _spawn_daemon(
    model_path: str, model_name: str, host: str, port: int, release_id: str = ""
) -> tuple[subprocess.Popen, str]:
    start_id = uuid.uuid4().hex
    logs = paths.ensure_private_dir(paths.logs_dir())
    env = dict(os.environ)
    env[identity.NONCE_ENV] = identity.new_nonce()
    argv = [
        sys.executable,
        "-m",
        "mlxctl.supervisor.daemon",
        "--model",
        model_path,
        "--model-name",
        model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--start-id",
        start_id,
        "--release",
        release_id,
    ]
    with open(logs / "supervisor.log", "ab") as log:
        # Own session, no stdin, output to its log: it outlives this terminal.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    return process, start_id


def _await_handshake(process: subprocess.Popen, start_id: str, timeout: float = 30.0) -> bool:
    """Wait until our daemon owns the state file: True; False when another one won the lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = read_state() or {}
        except statefile.CorruptState:
            state = {}
        if state.get("start_id") == start_id:
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
    pull_progress: object | None = None,
) -> StartOutcome:
    """Start the supervisor unless one runs; return once the worker answers /health 200."""
    from mlxctl import config
    from mlxctl.supervisor.daemon import port_is_free

    settings = config.load()
    release = current_release()
    name = model or (release.model if release else "") or settings["model"] or "demo"
    port = port or settings["port"]
    host = host or settings["host"]
    paths.ensure_private_dir(paths.run_dir())
    already = False
    with FileLock(paths.start_lock()):
        if _supervisor_alive():
            already = True
        else:
            _stop_orphan(settings["restart.stop_timeout"])
            model_path = resolve_model(name, pull_progress)
            if not port_is_free(host, port):
                raise PortInUseError(
                    f"port {port} is already in use by another program",
                    hint="pick another with `--port N` or `mlxctl config set port N`",
                )
            process, start_id = _spawn_daemon(
                model_path, name, host, port, release.id if release else ""
            )
            already = not _await_handshake(process, start_id)
    outcome = wait_until_ready(on_wait)
    outcome.already_running = already
    running = outcome.status.get("model")
    if already and model and running and model != running:
        outcome.notes.append(
            f"it serves {running}, not {model}: `mlxctl restart --model {model}` to switch"
        )
    return outcome


def wait_until_ready(on_wait: Callable[[float, str], None] | None = None) -> StartOutcome:
    """Poll the state file until the worker is RUNNING (healthy) or the supervisor gave up."""
    began = time.monotonic()
    while True:
        current, code = status(probe=False)
        if code == EXIT_RUNNING:
            return StartOutcome(False, status()[0])
        if current["supervisor_pid"] is None:
            try:
                state = read_state() or {}
            except statefile.CorruptState:
                state = {}
            raise _start_failure(state)
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


def _start_failure(state: dict) -> SupervisorError:
    exit_info = state.get("last_exit") or {}
    reason = state.get("error") or exit_info.get("reason") or state.get("fatal_reason")
    if (state.get("error") or "").startswith("port "):
        return PortInUseError(state["error"], hint="pick another with `--port N`")
    return StartFailedError(
        f"the worker did not start: {reason or 'the supervisor exited'}",
        hint="full log: `mlxctl logs -n 200` (supervisor: `mlxctl logs --supervisor`)",
        worker_exit_code=exit_info.get("code"),
        log_tail=tail(paths.worker_log(), 20),
    )


# -- stop --------------------------------------------------------------------------------------


@dataclass
class StopOutcome:
    was_running: bool
    supervisor_pid: int | None = None
    worker_pid: int | None = None
    forced: bool = False


def _kill_group_of(proc: psutil.Process, grace: float) -> bool:
    """SIGTERM the process's group, SIGKILL after `grace`; True when it had to force."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        try:
            proc.wait(wait)
            return sig == signal.SIGKILL
        except psutil.TimeoutExpired:
            continue
    return True


def _stop_orphan(grace: float) -> int | None:
    """Stop a worker whose supervisor was SIGKILLed (identity-checked); its pid, if any."""
    try:
        state = read_state() or {}
    except statefile.CorruptState:
        return None
    worker = identity.process_of(identity.Identity.from_dict(state.get("worker")))
    if worker is None:
        return None
    _note(f"stopping the worker left by a dead supervisor (pid {worker.pid})")
    _kill_group_of(worker, grace)
    return worker.pid


def _note(message: str) -> None:
    """A line in the supervisor's log from the CLI side (no supervisor is there to write it)."""
    from datetime import datetime

    paths.ensure_private_dir(paths.logs_dir())
    with open(paths.supervisor_log(), "a") as log:
        log.write(f"{datetime.now().isoformat(timespec='milliseconds')} {message}\n")


def stop(timeout: float | None = None) -> StopOutcome:
    """Stop the worker (SIGTERM, grace, SIGKILL) and its supervisor; idempotent."""
    from mlxctl import config
    from mlxctl.supervisor.daemon import STOP_REQUEST

    grace = timeout if timeout is not None else config.load()["restart.stop_timeout"]
    with FileLock(paths.start_lock()):
        try:
            state = read_state() or {}
        except statefile.CorruptState:
            state = {}
        sup = identity.process_of(identity.Identity.from_dict(state.get("supervisor")))
        worker = identity.process_of(identity.Identity.from_dict(state.get("worker")))
        outcome = StopOutcome(
            sup is not None or worker is not None,
            sup.pid if sup else None,
            worker.pid if worker else None,
        )
        if sup is None:
            if worker is not None:  # orphan of a dead supervisor
                outcome.forced = _kill_group_of(worker, grace)
            return outcome
        statefile.write_json(paths.run_dir() / STOP_REQUEST, {"timeout": grace})
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(grace + 10)
        except psutil.TimeoutExpired:
            # The supervisor itself is stuck: take both down by force.
            outcome.forced = True
            sup.kill()
            if worker is not None and worker.is_running():
                _kill_group_of(worker, 0)
        return outcome


def run_foreground(model: str | None = None, port: int | None = None) -> int:
    """Run the supervisor in this process (logs on stderr); Ctrl-C stops the worker cleanly."""
    from mlxctl import config
    from mlxctl.supervisor import daemon

    settings = config.load()
    release = current_release()
    name = model or (release.model if release else "") or settings["model"] or "demo"
    port = port or settings["port"]
    host = settings["host"]
    with FileLock(paths.start_lock()):
        if _supervisor_alive():
            raise SupervisorError(
                "the supervisor is already running", hint="`mlxctl stop` first, or `mlxctl status`"
            )
        model_path = resolve_model(name)
        if not daemon.port_is_free(host, port):
            raise PortInUseError(
                f"port {port} is already in use by another program",
                hint="pick another with `--port N`",
            )
    argv = ["--model", model_path, "--model-name", name, "--host", host, "--port", str(port)]
    if release:
        argv += ["--release", release.id]
    return daemon.main(argv, foreground=True)
