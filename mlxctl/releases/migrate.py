"""Health-gated switches between releases: migrate (forward) and rollback (back), same steps.

Plan: preflight -> baseline -> side start -> smoke tests -> cut over -> record. Until the cut-over
the running release is never touched; a failure at the cut-over puts the previous release back
on the main port. `current` only ever names a complete release and is replaced atomically, so a
kill at any moment leaves a consistent state for the next command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import psutil

from mlxctl import config, paths, service
from mlxctl.errors import MlxctlError, ReleaseError
from mlxctl.releases import smoke
from mlxctl.releases.record import COMMAND, Release, launch
from mlxctl.releases.store import ReleaseStore
from server.contract import API_KEY_ENV

SIDE_PID_FILE = "side-worker.pid"
SIDE_STARTUP_SECONDS = 600.0


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class SwitchOutcome:
    action: str
    source: str | None
    target: str
    ok: bool
    steps: list[StepResult] = field(default_factory=list)
    failed_step: str | None = None
    restored: bool | None = None  # after a failure: is the previous release healthy again?


class StepFailed(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the side worker ---------------------------------------------------------------------------


class SideWorker:
    """The target release on a spare port, in its own process group, dying with us."""

    def __init__(self, store: ReleaseStore, release: Release, host: str):
        from mlxctl.supervisor.seam import _SHIM as DIE_WITH_PARENT
        from server.blas import worker_env

        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        folder = store.folder(release.id)
        self.model = resolve_model_arg(release.model)
        settings = config.load()
        # The configured cache budgets, as the supervisor's own worker gets them.
        cache = config.cache_options(settings)
        spec = launch(replace(release, model=self.model), folder, host, self.port, **cache)
        self.health_url = self.url + spec.health_path
        env = worker_env()
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        if settings["api_key"]:
            env[API_KEY_ENV] = settings["api_key"]
        self.log_path = paths.ensure_private_dir(paths.logs_dir()) / f"side-{release.id}.log"
        log = self.log_path.open("wb")
        argv = [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *spec.argv]
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        log.close()
        (paths.ensure_private_dir(paths.run_dir()) / SIDE_PID_FILE).write_text(
            f"{self.process.pid} {psutil.Process(self.process.pid).create_time()}\n"
        )

    def wait_healthy(self, timeout: float) -> float:
        began = time.monotonic()
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - began < timeout:
                code = self.process.poll()
                if code is not None:
                    raise StepFailed(f"exited with code {code} while starting: {self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.health_url).status_code == 200:
                        return time.monotonic() - began
                time.sleep(0.2)
        raise StepFailed(f"no /health 200 within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        (paths.run_dir() / SIDE_PID_FILE).unlink(missing_ok=True)


def resolve_model_arg(model: str) -> str:
    """What the worker is given for `model`: an installed name becomes its path."""
    try:
        return service.resolve_model(model)
    except MlxctlError:
        return model  # an external server may know names we do not


def reap_stale_side_worker() -> None:
    """A side worker left by a killed mlxctl (where no parent-death signal exists) is stopped."""
    pid_file = paths.run_dir() / SIDE_PID_FILE
    if not pid_file.is_file():
        return
    with contextlib.suppress(ValueError, psutil.Error, ProcessLookupError):
        pid, created = pid_file.read_text().split()
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(created)) < 0.01:  # the same process, not a reused pid
            os.killpg(proc.pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


# -- the steps ---------------------------------------------------------------------------------


def preflight(release: Release) -> str:
    notes = []
    if release.kind == COMMAND:
        argv = launch(release, None, "127.0.0.1", 1).argv
        if not argv or not (shutil.which(argv[0]) or Path(argv[0]).is_file()):
            raise StepFailed(f"command not found: {argv[0] if argv else '(empty)'}")
    else:
        from mlxctl.models import registry
        from mlxctl.releases.snapshot import runtime_versions

        try:
            registry.resolve(release.model)
        except MlxctlError as exc:
            raise StepFailed(str(exc)) from None
        now = runtime_versions()
        for name in ("mlx", "mlx-lm"):
            if release.versions.get(name) and release.versions[name] != now[name]:
                notes.append(f"{name} {release.versions[name]} recorded, {now[name]} installed")
    free = shutil.disk_usage(paths.home() if paths.home().exists() else Path.home()).free
    if free < 512 * 1024**2:
        raise StepFailed(f"only {free // 1024**2} MiB free under {paths.home()}")
    return "; ".join(notes) or "ok"


def baseline() -> str:
    state, code = service.status(probe=False)
    if code != service.EXIT_RUNNING:
        return "nothing running"
    with httpx.Client(timeout=smoke.TIMEOUT) as client:
        try:
            model = (service.read_state() or {}).get("model_path") or state["model"]
            return "current release: " + smoke.check_chat(client, state["url"], _auth(), model)
        except (smoke.SmokeFailure, httpx.HTTPError) as exc:
            return f"current release did not answer a chat ({exc})"


def _auth() -> dict:
    key = config.load()["api_key"]
    return {"Authorization": f"Bearer {key}", "x-api-key": key} if key else {}


def _start_current_and_check(store: ReleaseStore) -> str:
    outcome = service.start()
    with httpx.Client(timeout=10.0) as client:
        code = client.get(outcome.status["url"] + "/health", headers=_auth()).status_code
    if code != 200:
        raise StepFailed(f"/health answered {code} on the main port")
    return f"{store.current_id()} healthy at {outcome.status['url']}"


# -- migrate / rollback ------------------------------------------------------------------------


def plan(store: ReleaseStore, target: Release, action: str) -> list[str]:
    current = store.current_id()
    steps = [
        f"preflight checks for {target.id}",
        "baseline: a short chat on the running release",
        f"start {target.id} on a side port and wait for /health",
    ]
    steps += [f"smoke test: {check.name}" for check in smoke.checks_for(target)]
    steps += [
        f"cut over: stop {current or 'the running worker'}, "
        f"point current at {target.id}, start it on the main port",
        f"record the {action} in the journal",
    ]
    return steps


def switch(
    store: ReleaseStore,
    target_id: str,
    action: str = "migrate",
    report: Callable[[StepResult], None] | None = None,
) -> SwitchOutcome:
    """Move to `target_id` through every step; on any failure put the previous one back."""
    report = report or (lambda step: None)
    target = store.get(target_id)
    source = store.current_id()
    outcome = SwitchOutcome(action, source, target.id, ok=False)
    was_running = service.status(probe=False)[1] == service.EXIT_RUNNING
    reap_stale_side_worker()
    store.record(action, outcome="begin", **{"from": source, "to": target.id})

    def step(name: str, action_fn: Callable[[], str]) -> None:
        began = time.monotonic()
        try:
            detail = action_fn()
        except (StepFailed, smoke.SmokeFailure, MlxctlError, httpx.HTTPError, OSError) as exc:
            result = StepResult(
                name, False, str(exc) or type(exc).__name__, time.monotonic() - began
            )
            outcome.steps.append(result)
            report(result)
            raise StepFailed(name) from exc
        result = StepResult(name, True, detail, time.monotonic() - began)
        outcome.steps.append(result)
        report(result)

    side = None
    try:
        step("preflight", lambda: preflight(target))
        step("baseline", baseline)
        host = config.load()["host"]
        side_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

        def start_side() -> str:
            nonlocal side
            side = SideWorker(store, target, side_host)
            return (
                f"healthy on port {side.port} after {side.wait_healthy(SIDE_STARTUP_SECONDS):.1f}s"
            )

        step("side start", start_side)
        with httpx.Client(timeout=smoke.TIMEOUT) as client:
            for check in smoke.checks_for(target):
                step(
                    f"smoke: {check.name}",
                    lambda c=check: c.run(client, side.url, _auth(), side.model),
                )
        side.stop()
        side = None

        def cut_over() -> str:
            service.stop()
            store.set_current(target.id, action)
            return _start_current_and_check(store)

        step("cut over", cut_over)
        outcome.ok = True
    except StepFailed as failed:
        outcome.failed_step = str(failed)
        if side is not None:
            side.stop()
        outcome.restored = _restore(store, source, was_running, report)
    finally:
        if side is not None:
            side.stop()
    store.record(
        action,
        outcome="ok" if outcome.ok else "failed",
        step=outcome.failed_step,
        restored=outcome.restored,
        **{"from": source, "to": target.id},
    )
    return outcome


def _restore(
    store: ReleaseStore, source: str | None, was_running: bool, report: Callable[[StepResult], None]
) -> bool:
    """Put `source` back as current and, if it was serving before, serving again and healthy."""
    began = time.monotonic()
    try:
        if source and store.current_id() != source:
            service.stop()
            store.set_current(source, "restore")
        running = service.status(probe=False)[1] == service.EXIT_RUNNING
        if not was_running and not running:
            detail = f"current is {source or 'unset'} again (it was not running)"
        else:
            detail = _start_current_and_check(store) if not running else "still serving"
        report(StepResult("roll back", True, detail, time.monotonic() - began))
        return True
    except (MlxctlError, StepFailed, httpx.HTTPError, OSError) as exc:
        report(StepResult("roll back", False, str(exc), time.monotonic() - began))
        return False


def rollback_target(store: ReleaseStore, release_id: str | None) -> str | None:
    """The release `mlxctl rollback [ID]` goes to, or None when there is nothing to do."""
    if release_id:
        store.get(release_id)
        return None if release_id == store.current_id() else release_id
    return store.previous_id()


def require_current(store: ReleaseStore) -> str:
    current = store.current_id()
    if current is None:
        raise ReleaseError(
            "no current release", hint="record the installed worker with `mlxctl release archive`"
        )
    return current
