"""What the daemon writes to the state file: itself, its worker, the [models.NAME] ones, in
wall-clock times; and this run's FATAL counted against `restart.start_limit`.
"""

from __future__ import annotations

import argparse
import time
from typing import Protocol

from mlxctl.supervisor import state as state_file
from mlxctl.supervisor.fleet import Fleet
from mlxctl.supervisor.handover import base_of
from mlxctl.supervisor.machine import Supervisor
from mlxctl.supervisor.memory import MemoryGuard
from mlxctl.supervisor.states import State
from mlxctl.supervisor.switches import Switches
from mlxctl.system import identity


class StateOwner(Protocol):
    """What a snapshot reads of the daemon."""

    me: identity.Identity
    started_wall: float
    args: argparse.Namespace
    error: str | None
    url: str
    settings: dict
    switches: Switches
    memory: MemoryGuard | None
    fleet: Fleet | None


def snapshot(owner: StateOwner, sup: Supervisor | None) -> state_file.SupervisorState:
    mono, wall = time.monotonic(), time.time()

    def to_wall(t: float | None) -> float | None:
        return None if t is None else wall - (mono - t)

    args = owner.args
    now = state_file.SupervisorState(
        supervisor=owner.me.to_dict(),
        supervisor_started_at=owner.started_wall,
        start_id=args.start_id,
        error=owner.error,
        model=args.model_name,
        model_path=args.model,
        host=args.host,
        port=args.port,
        url=owner.url,
        configured_address=state_file.configured_address(owner.settings),
        release=args.release or None,
        switch=owner.switches.verdict,
        updated_at=wall,
    )
    if sup is None:
        return now
    now.state = sup.state.value
    if sup.handle is not None:
        h = sup.handle
        now.worker = identity.Identity(h.pid, h.create_time, h.nonce).to_dict()
        now.worker_started_at = to_wall(sup.spawned_at)
    if sup.handle is not None and sup.spec is not None:
        now.worker_url = base_of(sup.spec.url)
        now.worker_port = int(now.worker_url.rsplit(":", 1)[1])
    if sup.last_exit is not None:
        e = sup.last_exit
        now.last_exit = {"code": e.code, "reason": e.reason, "at": to_wall(e.at)}
    now.running_since = to_wall(sup.running_since)
    now.restarts = sup.restarts
    if owner.memory is not None:
        now.memory_limits = owner.memory.limits.to_dict()
    now.fatal_reason = sup.fatal_reason
    if owner.fleet is not None:
        now.models = owner.fleet.rows(to_wall, now.worker, now.worker_url)
    return now


def count_failed_start(sup: Supervisor | None, stable_after: float) -> bool:
    """FATAL counts against `restart.start_limit`; a stable run forgives earlier ones.

    True once this run is counted (the caller asks no more)."""
    if sup is None:
        return False
    if sup.state is State.FATAL:
        state_file.record_failed_start(sup.fatal_reason)
        return True  # after the write: a failed one is tried again
    if sup.running_since is not None:
        stable = time.monotonic() - sup.running_since >= stable_after
        if stable and state_file.failed_starts()["count"]:
            state_file.reset_failed_starts()
            return True
    return False
