"""Switches the CLI asks a running supervisor for (restart, migrate, rollback), and where the
front door sends requests as the worker's state changes.

`mlxctl` leaves `run/switch-request.json`; the daemon's loop hands it to `take`. With memory for
two copies of the model the next worker starts beside the serving one (handover.py); else the
serving one stops first while the front door holds requests. The verdict goes to the state
file's `switch`, where the CLI reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Protocol

from mlxctl import worker_client
from mlxctl.front_door.routes import Route, RouteTable
from mlxctl.supervisor import state as state_file
from mlxctl.supervisor.handover import base_of
from mlxctl.supervisor.machine import Supervisor
from mlxctl.supervisor.memory import MemoryGuard, room_for_another
from mlxctl.supervisor.seam import RealSeam
from mlxctl.supervisor.states import State
from mlxctl.system.processes import WorkerSpec


class Owner(Protocol):
    """What a switch needs of the daemon: its arguments (the serving worker's) and helpers."""

    args: argparse.Namespace
    settings: dict
    memory: MemoryGuard | None

    def log(self, message: str) -> None: ...

    def make_spec(self, args: argparse.Namespace | None = None) -> WorkerSpec: ...

    def output_tail(self) -> str: ...


def route_for(sup: Supervisor) -> Route:
    """Live while a worker serves; held while one is coming; down once none is."""
    if sup.state is State.RUNNING and sup.spec is not None and not sup.stop_requested:
        return Route(url=base_of(sup.spec.url), state="running")
    if sup.stop_requested or sup.state in (State.STOPPED, State.FATAL):
        state = "fatal" if sup.state is State.FATAL else "stopping"
        return Route(down=sup.fatal_reason or "the service is stopping", state=state)
    return Route(state="starting")  # starting, backing off after a crash: requests wait


class Switches:
    def __init__(self, owner: Owner):
        self.owner = owner
        self.verdict: dict | None = None  # the latest switch: {"id", "ok", "detail"}
        self.next_args: argparse.Namespace | None = None  # what a handover in progress starts
        self.by_restart = False  # this switch stopped the old worker first (memory)
        self.reason = ""  # the switch in progress: migrate, rollback, restart
        self.vetted = ""  # the smoke tests its next worker passed
        self.seam: RealSeam | None = None
        self.routes: RouteTable | None = None  # the front door's, pointed at every change

    def take(self, sup: Supervisor) -> bool:
        """Start the switch `mlxctl` asked for, if any; True when there was one."""
        request = state_file.take_switch_request()
        if request is None:
            return False
        owner = self.owner
        args = argparse.Namespace(**vars(owner.args))
        for key in ("model", "model_name", "release"):
            if request.get(key) is not None:
                setattr(args, key, request[key])
        reason = self.reason = str(request.get("reason") or "switch")
        self.verdict = {"id": request["id"], "ok": None, "detail": reason}
        self.vetted = ""
        self.by_restart = False
        if sup.state is not State.RUNNING or sup.successor is not None:
            self._finish(False, f"the worker is {sup.state.value}, not serving")
        elif room_for_another(owner.memory.limits if owner.memory else None, weights_of(args)):
            self.next_args = args
            if not sup.request_handover(reason, lambda: owner.make_spec(args)):
                self.next_args = None
                self._finish(False, "the service is stopping")
        else:
            owner.log(f"{reason}: memory holds one copy of the model; stopping the worker first "
                      "(the front door holds requests until the next one is healthy)")  # fmt: skip
            owner.args, self.by_restart = args, True
            if self.seam is not None:
                self.seam.model = args.model
            sup.request_restart(reason)
        return True

    def changed(self, sup: Supervisor) -> None:
        """Point the front door; a stop-first switch is over once the next worker runs (or the
        service is FATAL)."""
        if self.routes is not None:
            self.routes.set(route_for(sup))
        if self.verdict is None or not self.by_restart:
            return
        if sup.state is State.RUNNING:
            self._finish(True, f"serving {self.owner.args.model_name}")
        elif sup.state is State.FATAL:
            self._finish(False, sup.fatal_reason or "FATAL")

    def handed_over(self, verdict: str) -> None:
        """The machine's verdict on a handover: "" the next worker serves, else why not."""
        if not verdict and self.next_args is not None:
            self._point_current(self.next_args.release)
            self.owner.args = self.next_args
            if self.seam is not None:
                self.seam.model = self.next_args.model  # the canary asks the new model
        self.next_args = None
        if not verdict:
            passed = f"; smoke tests passed: {self.vetted}" if self.vetted else ""
            self._finish(True, f"serving {self.owner.args.model_name}{passed}")
            return
        if not verdict.startswith("smoke tests failed"):
            tail = self.owner.output_tail()  # why it could not start: its last words
            verdict = f"{verdict}: {tail}" if tail else verdict
        self._finish(False, verdict)

    def _point_current(self, release: str) -> None:
        """A release now serves: `current` names it, even if the `mlxctl` that asked is gone."""
        if not release or release == self.owner.args.release:
            return
        from mlxctl.errors import MlxctlError
        from mlxctl.releases.store import ReleaseStore

        try:
            ReleaseStore().set_current(release, self.reason)
        except (MlxctlError, OSError) as exc:
            self.owner.log(f"{release} serves, but `current` could not name it: {exc}")

    def _finish(self, ok: bool, detail: str) -> None:
        if self.verdict is not None:
            self.verdict = {**self.verdict, "ok": ok, "detail": detail}
        self.by_restart = False

    def vet(self, spec: WorkerSpec, timeout: float) -> str:
        """The smoke tests a switch's next worker passes before it takes requests."""
        from mlxctl.releases import smoke

        args = self.next_args or self.owner.args
        checks = [smoke.Check("health", smoke.check_health), smoke.Check("chat", smoke.check_chat)]
        if args.release:
            from mlxctl.releases.store import ReleaseStore

            checks = smoke.checks_for(ReleaseStore().get(args.release))
        key = self.owner.settings["api_key"] or None
        client = worker_client.WorkerClient(base_of(spec.url), key, max(timeout, smoke.TIMEOUT))
        for check in checks:
            try:
                check.run(client, args.model)
            except Exception as exc:  # any failure keeps the serving worker
                return f"{check.name}: {exc}"
        self.vetted = ", ".join(check.name for check in checks)
        return ""


def weights_of(args: argparse.Namespace) -> int | None:
    return weights_bytes(args.model)


def weights_bytes(model: str) -> int | None:
    """The size of a local model folder (or file); None for a hub id."""
    path = Path(model).expanduser()
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
