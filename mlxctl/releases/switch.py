"""Health-gated switches between releases: migrate (forward) and rollback (back), same steps.

Plan: preflight -> baseline -> side start -> smoke tests -> cut over -> record. Until the cut-over
the running release is never touched. The cut-over is the supervisor's handover behind the front
door (the target starts beside the serving worker, passes the smoke tests, then takes new
requests; the old one finishes and stops), so the address never closes; a failure there leaves
the previous release serving. `current` only ever names a complete release and is replaced
atomically, so a kill at any moment leaves a consistent state for the next command.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from mlxctl import config, lifecycle, paths
from mlxctl.errors import MlxctlError, ReleaseError
from mlxctl.hand_over import can_hand_over, hand_over
from mlxctl.releases import smoke
from mlxctl.releases.model_ref import recorded_model
from mlxctl.releases.record import COMMAND, Release, launch
from mlxctl.releases.store import ReleaseStore
from mlxctl.status import status
from mlxctl.stop import stop as stop_service
from mlxctl.system import identity, processes
from mlxctl.worker_client import WorkerClient, base_url, connect_host, probe

SIDE_STARTUP_SECONDS = 600.0
SIDE_STOP_GRACE = 15.0


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


class StepFailed(ReleaseError):
    """A step of a switch failed: raised inside `switch` to reach the roll-back (control flow)."""


# -- the side worker ---------------------------------------------------------------------------


class SideWorker:
    """The target release on a spare port, in its own process group, dying with us."""

    def __init__(self, store: ReleaseStore, release: Release, host: str):
        settings = config.load()
        self.port = processes.free_port(host)
        self.model = resolve_model_arg(release.model)
        # The configured cache budgets, hosts and key, as the supervisor's own worker gets them
        # (its output goes to its own side log, not to worker.log).
        options = config.worker_options(settings)
        folder = store.folder(release.id)
        run = launch(replace(release, model=self.model), folder, host, self.port, **options)
        self.health_url = base_url(host, self.port) + run.health_path
        self.client = WorkerClient(base_url(host, self.port), settings["api_key"], smoke.TIMEOUT)
        spec = processes.worker_spec(run.argv, run.env, settings["api_key"])
        paths.ensure_private_dir(paths.logs_dir())
        self.log_path = paths.side_worker_log(release.id)
        with self.log_path.open("wb") as log:
            self.process = processes.spawn_worker(spec, stdout=log)
        me = identity.Identity.of(self.process.pid, spec.nonce)
        if me is not None:  # None: it is gone already, and wait_healthy says why
            paths.ensure_private_dir(paths.run_dir())
            side_pid_file().write(me)

    def wait_healthy(self, timeout: float) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            code = self.process.poll()
            if code is not None:
                raise StepFailed(f"exited with code {code} while starting: {self.log_tail()}")
            if probe(self.health_url, 2.0) == 200:
                return time.monotonic() - began
            time.sleep(0.2)
        raise StepFailed(f"no /health 200 within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.process.poll() is None:
            processes.stop_group(self.process, SIDE_STOP_GRACE)
        side_pid_file().remove()


def side_pid_file() -> processes.PidFile:
    return processes.PidFile(paths.side_worker_pid())


def resolve_model_arg(model: str) -> str:
    """What the worker is given for `model`: an installed name becomes its path."""
    try:
        return lifecycle.resolve_model(model)
    except MlxctlError:
        return model  # an external server may know names we do not


def reap_stale_side_worker() -> None:
    """A side worker left by a killed mlxctl (where no parent-death signal exists) is stopped."""
    pid_file = side_pid_file()
    stale = pid_file.process()
    if stale is not None:
        processes.stop_group(stale, 0)
    pid_file.remove()


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
    now = status(probe=False)
    if not now.running:
        return "nothing running"
    model = now.model_path or now.model
    if now.url is None or model is None:
        return "the state file names no worker URL or model"
    client = WorkerClient.configured(now.url, smoke.TIMEOUT)
    try:
        return "current release: " + smoke.check_chat(client, model)
    except MlxctlError as exc:
        return f"current release did not answer a chat ({exc})"


def ensure_baseline(store: ReleaseStore, settings: dict) -> Release | None:
    """Before the first migration: record what runs now, so `mlxctl rollback` has somewhere to
    go. The new current release, or None when one was set already."""
    if store.current_id() is not None:
        return None
    from mlxctl.releases.snapshot import archive_installed

    model = recorded_model(settings=settings)  # what runs now, as a reference that resolves
    layout = config.distributed_options(settings)  # the hosts it runs on now travel with it
    recorded = archive_installed(store, model, "installed worker", layout)
    store.set_current(recorded.id, "archive")
    return recorded


def _start_current_and_check(store: ReleaseStore) -> str:
    outcome = lifecycle.start()
    if outcome.status.url is None:
        raise StepFailed("started, but the state file names no worker URL")
    code = WorkerClient.configured(outcome.status.url).health()
    if code != 200:
        raise StepFailed(f"/health answered {code} on the main port")
    return f"{store.current_id()} healthy at {outcome.status.url}"


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
        f"cut over: start {target.id} beside {current or 'the running worker'} behind the "
        "front door, smoke-test it, send new requests to it; the old one finishes, then stops",
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
    was_running = status(probe=False).running
    reap_stale_side_worker()
    store.record(action, outcome="begin", **{"from": source, "to": target.id})

    def step(name: str, action_fn: Callable[[], str]) -> None:
        began = time.monotonic()
        try:
            detail = action_fn()
        except (MlxctlError, OSError) as exc:  # StepFailed and SmokeFailure included
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
        side_host = connect_host(config.load()["host"])

        def start_side() -> str:
            nonlocal side
            side = SideWorker(store, target, side_host)
            return (
                f"healthy on port {side.port} after {side.wait_healthy(SIDE_STARTUP_SECONDS):.1f}s"
            )

        step("side start", start_side)
        started = side
        assert started is not None  # start_side set it, or step raised
        for check in smoke.checks_for(target):
            step(f"smoke: {check.name}", partial(check.run, started.client, started.model))
        started.stop()
        side = None

        def cut_over() -> str:
            if not can_hand_over():
                stop_service()
                store.set_current(target.id, action)
                return _start_current_and_check(store)
            # On a failure the previous release still serves and stays current.
            detail = hand_over(action, started.model, target.model, target.id)
            store.set_current(target.id, action)
            return f"{target.id} serving behind the front door: {detail}"

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
            stop_service()
            store.set_current(source, "restore")
        running = status(probe=False).running
        if not was_running and not running:
            detail = f"current is {source or 'unset'} again (it was not running)"
        else:
            detail = _start_current_and_check(store) if not running else "still serving"
        report(StepResult("roll back", True, detail, time.monotonic() - began))
        return True
    except (MlxctlError, OSError) as exc:
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
