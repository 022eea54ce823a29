"""Health-gated switches between releases: migrate (forward) and rollback (back), same steps.

Plan: preflight -> baseline -> switch -> record. The switch is the supervisor's handover behind
the front door, the only place the target is started (its model loads once): it starts beside
the serving worker on a private port, passes the smoke tests, then takes new requests; the old
one finishes and stops, so the address never closes, and a failure leaves the previous release
serving and current. With no service running, the target is started as the service and checked
in place. `current` only ever names a complete release and is replaced atomically (the daemon
points it at the target once it serves), so a kill at any moment leaves a consistent state.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from mlxctl.worker_client import WorkerClient


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


def resolve_model_arg(model: str) -> str:
    """What the worker is given for `model`: an installed name becomes its path."""
    try:
        return lifecycle.resolve_model(model)
    except MlxctlError:
        return model  # an external server may know names we do not


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


def _start_and_smoke_test(store: ReleaseStore, target: Release, action: str) -> str:
    """No service runs: the target starts as the service (its one load) and is checked there."""
    stop_service()
    store.set_current(target.id, action)
    started = _start_current_and_check(store)
    now = status(probe=False)
    assert now.url is not None  # _start_current_and_check read it
    client = WorkerClient.configured(now.url, smoke.TIMEOUT)
    model = now.model_path or now.model or resolve_model_arg(target.model)
    seen = [f"{check.name}: {check.run(client, model)}" for check in smoke.checks_for(target)]
    return f"{started}; smoke tests passed ({'; '.join(seen)})"


# -- migrate / rollback ------------------------------------------------------------------------


def plan(store: ReleaseStore, target: Release, action: str) -> list[str]:
    current = store.current_id()
    checks = ", ".join(check.name for check in smoke.checks_for(target))
    return [
        f"preflight checks for {target.id}",
        "baseline: a short chat on the running release",
        f"switch: the supervisor starts {target.id} beside {current or 'the running worker'} "
        f"behind the front door (its only start), waits for /health, smoke-tests it ({checks}), "
        "then sends new requests to it; the old one finishes, then stops (with no service "
        f"running: {target.id} starts as the service and is smoke-tested there)",
        f"record the {action} in the journal",
    ]


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

    def switch_over() -> str:
        if not can_hand_over():
            return _start_and_smoke_test(store, target, action)
        # The daemon starts and vets the target; a failure leaves the previous release serving.
        model = resolve_model_arg(target.model)
        detail = hand_over(action, model, target.model, target.id)
        if store.current_id() != target.id:  # the daemon points it once the target serves
            store.set_current(target.id, action)
        return f"{target.id} serving behind the front door: {detail}"

    try:
        step("preflight", lambda: preflight(target))
        step("baseline", baseline)
        step("switch", switch_over)
        outcome.ok = True
    except StepFailed as failed:
        outcome.failed_step = str(failed)
        outcome.restored = _restore(store, source, was_running, report)
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
