"""The core of `mlxctl stop`: the worker (SIGTERM, grace, SIGKILL), then its supervisor, found by
identity (the state file's, else its lock holder's), never by a bare pid. No Typer, no Rich."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from mlxctl import paths
from mlxctl.errors import ConfigError
from mlxctl.supervisor import state as state_file
from mlxctl.system import identity, processes
from mlxctl.system.lock import FileLock, holder


@dataclass
class StopOutcome:
    was_running: bool
    supervisor_pid: int | None = None
    worker_pid: int | None = None
    forced: bool = False
    notes: list[str] = field(default_factory=list)


def stop_orphan(grace: float) -> int | None:
    """Stop a worker whose supervisor was SIGKILLed (identity-checked); its pid, if any."""
    saved = state_file.read_or_none()
    recorded = saved.worker_identity if saved else None
    worker = identity.process_of(recorded)
    if worker is not None:
        _note(f"stopping the worker left by a dead supervisor (pid {worker.pid})")
        processes.stop_group(worker, grace)
    swept = processes.sweep(recorded)  # its children outlive it (external commands)
    if swept:
        _note(f"killed {len(swept)} processes left behind by that worker: {swept}")
    return worker.pid if worker is not None else None


def _note(message: str) -> None:
    """A line in the supervisor's log from the CLI side (no supervisor is there to write it)."""
    from datetime import datetime

    paths.ensure_private_dir(paths.logs_dir())
    with open(paths.supervisor_log(), "a") as log:
        log.write(f"{datetime.now().isoformat(timespec='milliseconds')} {message}\n")


def stop(timeout: float | None = None) -> StopOutcome:
    """Stop the worker (SIGTERM, grace, SIGKILL) and its supervisor; idempotent."""
    notes: list[str] = []
    if timeout is None:
        timeout = _configured_stop_timeout(notes)
    with FileLock(paths.start_lock()):
        saved = state_file.read_or_none()
        sup = _supervisor_process(saved)
        worker = identity.process_of(saved.worker_identity if saved else None)
        outcome = StopOutcome(
            sup is not None or worker is not None,
            sup.pid if sup else None,
            worker.pid if worker else None,
            notes=notes,
        )
        if sup is None:
            if worker is not None:  # orphan of a dead supervisor
                outcome.forced = processes.stop_group(worker, timeout)
            processes.sweep(saved.worker_identity if saved else None)
            return outcome
        try:
            state_file.request_stop(timeout)
        except OSError as exc:  # a full disk: the supervisor uses its configured grace
            outcome.notes.append(f"could not pass the grace period on ({exc})")
        sup.send_signal(signal.SIGTERM)
        if not processes.wait_exited(sup, timeout + 10):
            # The supervisor itself is stuck: take both down by force.
            outcome.forced = True
            sup.kill()
            if worker is not None and worker.is_running():
                processes.stop_group(worker, 0)
        return outcome


def _supervisor_process(saved: state_file.SupervisorState | None):
    """The live supervisor: by the state file's identity, else by the one its lock's holder
    recorded (a damaged state file must not hide a running supervisor)."""
    sup = identity.process_of(saved.supervisor_identity if saved else None)
    if sup is None:
        sup = identity.process_of(identity.Identity.from_dict(holder(paths.supervisor_lock())))
    return sup


def _configured_stop_timeout(notes: list[str]) -> float:
    """The configured grace period; a broken config file must not keep `stop` from stopping."""
    from mlxctl import config

    try:
        return config.load()["restart.stop_timeout"]
    except ConfigError as exc:
        default = config.KEYS["restart.stop_timeout"].default
        notes.append(f"{exc}; stopping with the default grace period ({default:g}s)")
        return default
