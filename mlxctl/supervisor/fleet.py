"""Several models by name: one supervised worker per `[models.NAME]` entry beside the default's.

Each has its own state machine (restart policy), private port, log (`logs/worker-NAME.log`) and
cache folder (`cache/models/NAME`). None starts with the service: a request that names one
wants it at the front door, and the daemon's loop starts it here, first stopping the least
recently used idle models its memory need does not fit beside (budget.py), or refusing the
wanting requests when even that is not enough. An unpinned model with nothing in flight for its
`idle_unload` stops.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlxctl import paths, worker_client
from mlxctl.errors import MlxctlError
from mlxctl.front_door.routes import Route, RouteTable
from mlxctl.models.served import DEFAULT, ServedModel
from mlxctl.supervisor.budget import Loaded, make_room, planned_need
from mlxctl.supervisor.handover import base_of
from mlxctl.supervisor.machine import Supervisor, Timing
from mlxctl.supervisor.policy import RestartPolicy, auto_startup_timeout
from mlxctl.supervisor.seam import RealSeam
from mlxctl.supervisor.states import State
from mlxctl.supervisor.switches import weights_bytes
from mlxctl.supervisor.worker_command import WORKER_HOST, worker_command
from mlxctl.supervisor.worker_output import SPAWN_MARK, WorkerOutput
from mlxctl.system import identity, processes
from mlxctl.system.processes import WorkerSpec

COUNT_EVERY = 1.0  # seconds between state writes for request counts alone


def cache_dir_of(name: str) -> Path:
    return paths.model_cache_dir(name)


def log_of(name: str) -> Path:
    return paths.logs_dir() / f"worker-{name}.log"


@dataclass
class Default:
    """The default model as the fleet sees it: it counts against the budget, never stops here."""

    sup: Supervisor
    need: int
    name: str = ""
    path: str = ""


class ModelWorker:
    """One `[models.NAME]` entry's worker, its state machine and what it did last."""

    def __init__(self, entry: ServedModel, settings: dict[str, Any], policy: RestartPolicy,
                 timing: Timing, log: Callable[[str], None], on_change: Callable[[], None],
                 routes: RouteTable):  # fmt: skip
        self.entry = entry
        self.name = entry.name
        self.settings = {**settings, **entry.settings}  # its own keys win over the top level
        self.log = lambda line: log(f"[{entry.name}] {line}")
        self.model = entry.path  # resolved on its first start
        self.resolved = False
        self.error: str | None = None  # it cannot be served (its model does not resolve)
        self.unloaded = ""  # why it last stopped: "idle", "memory", "" (never started)
        self.wanted = 0  # the latest ticket of a request waiting for it to start
        self.started_at: float | None = None
        limits = (settings["logs.max_bytes"], settings["logs.backups"])
        self.output = WorkerOutput(log_of(entry.name), *limits, log=self.log)
        self.seam = RealSeam(lambda spec: self.output.open_for(spec.argv), entry.path,
                             settings["api_key"] or None)  # fmt: skip
        startup = self.settings["restart.startup_timeout"]
        self.sup = Supervisor(
            self.seam, self.make_spec, policy,
            replace(timing, startup_timeout=startup or timing.startup_timeout),
            self.log, lambda sup: on_change(),
            busy=lambda url: routes.in_flight(url) > 0,
        )  # fmt: skip

    @property
    def need(self) -> int:
        return planned_need(self.model, self.settings["cache.ram_bytes"])

    @property
    def holds_memory(self) -> bool:
        return self.sup.handle is not None

    def resolve(self) -> bool:
        from mlxctl.models import registry

        try:
            self.model = self.seam.model = registry.resolve(self.entry.path)
            self.resolved = True
        except MlxctlError as exc:
            self.error = f"models.{self.name}.path: {exc}"
            self.log(self.error)
            return False
        if not self.settings["restart.startup_timeout"]:
            auto = auto_startup_timeout(weights_bytes(self.model))
            self.sup.timing = replace(self.sup.timing, startup_timeout=auto)
        return True

    def make_spec(self) -> WorkerSpec:
        port = processes.free_port(WORKER_HOST)
        private = worker_client.base_url(WORKER_HOST, port)
        args = argparse.Namespace(model=self.model, model_name=self.name, release="")
        argv, health_path, env = worker_command(args, self.settings, port, log_of(self.name),
                                                cache_dir_of(self.name))  # fmt: skip
        self.output.mark(f"{SPAWN_MARK} {self.name} ({self.model}) on {private}")
        return processes.worker_spec(argv, env, self.settings["api_key"], f"{private}{health_path}")

    def route(self, stopping: bool) -> Route:
        sup = self.sup
        if self.error:
            return Route(down=self.error, state="fatal")
        if stopping:
            return Route(down="the service is stopping", state="stopping")
        if sup.state is State.RUNNING and sup.spec is not None and not sup.stop_requested:
            return Route(url=base_of(sup.spec.url), state="running")
        if sup.state is State.FATAL:
            return Route(down=sup.fatal_reason or "FATAL", state="fatal")
        if self.wanted or sup.state in (State.STARTING, State.BACKOFF):
            return Route(state="starting")  # held: it is coming
        if sup.state is State.STOPPING or sup.stop_requested and self.holds_memory:
            return Route(asleep=True, state="stopping")
        return Route(asleep=True, state="idle-unloaded" if self.unloaded == "idle" else "stopped")


class Fleet:
    def __init__(self, entries: dict[str, ServedModel], settings: dict[str, Any],
                 policy: RestartPolicy, timing: Timing, routes: RouteTable, default: Default,
                 budget: int, log: Callable[[str], None]):  # fmt: skip
        self.routes = routes
        self.default = default
        self.budget = budget
        self.log = log
        self.changed = True  # the state file is due a write
        self.stopping = False
        self.served: tuple[int, ...] = ()  # requests served per model at the last state write
        self.counted_at = 0.0
        self.workers = {
            name: ModelWorker(entry, settings, policy, timing, log, self._mark, routes)
            for name, entry in entries.items()
        }
        for worker in self.workers.values():
            worker.seam.others = self._pids_besides(worker)
        self._point()

    def _mark(self) -> None:
        self.changed = True

    def _pids_besides(self, worker: ModelWorker | None) -> Callable[[], tuple[int, ...]]:
        """Every other worker's pid (a cleanup after `worker`'s exit must not reap them)."""

        def pids() -> tuple[int, ...]:
            sups = [w.sup for w in self.workers.values() if w is not worker]
            if worker is not None:
                sups.append(self.default.sup)
            handles = [h for s in sups for h in (s.handle, *(r.handle for r in s.retirees))]
            return tuple(h.pid for h in handles if h is not None)

        return pids

    def others_than_default(self) -> Callable[[], tuple[int, ...]]:
        return self._pids_besides(None)

    @property
    def done(self) -> bool:
        return all(not w.holds_memory for w in self.workers.values())

    def stop(self, timeout: float | None) -> None:
        self.stopping = True
        for worker in self.workers.values():
            if worker.sup.state not in (State.STOPPED, State.FATAL):
                worker.sup.request_stop(timeout)
        self._point()

    def kill(self) -> None:
        """The daemon failed: no worker may outlive it unsupervised."""
        for worker in self.workers.values():
            if worker.sup.handle is not None:
                worker.seam.signal_group(worker.sup.handle, signal.SIGKILL)

    # -- one step of the daemon's loop ---------------------------------------------------------

    def tick(self) -> bool:
        """Start what requests want, stop what idles, tick every worker; True when the state
        file is due a write."""
        if not self.stopping:
            for name, ticket in self.routes.take_wants().items():
                if name in self.workers:
                    self._want(self.workers[name], ticket)
            self._start_wanted()
            self._unload_idle()
        for worker in self.workers.values():
            worker.sup.tick()
        self._point()
        served = tuple(self.routes.usage(n)[2] for n in (DEFAULT, *self.workers))
        now = time.monotonic()
        if served != self.served and now - self.counted_at >= COUNT_EVERY:
            self.served, self.counted_at, self.changed = served, now, True  # status counts them
        changed, self.changed = self.changed, False
        return changed

    def _want(self, worker: ModelWorker, ticket: int) -> None:
        if worker.error or worker.sup.state is State.FATAL:
            return  # its route is down: the request has its answer
        if worker.sup.state in (State.STOPPED, State.STOPPING) or worker.sup.stop_requested:
            worker.wanted = ticket  # started once it has room (and has stopped, if stopping)

    def _start_wanted(self) -> None:
        leaving = any(w.sup.stop_requested and w.holds_memory for w in self.workers.values())
        for worker in self.workers.values():
            if not worker.wanted or worker.holds_memory or leaving:
                continue  # a worker that is stopping frees its memory first
            if not worker.resolved and not worker.resolve():
                self.routes.refuse(worker.name, worker.error or "", worker.wanted)
                worker.wanted = 0
                continue
            victims = make_room(worker.need, self.budget, self._loaded(besides=worker))
            if victims is None:
                why = (f"not enough memory to start {worker.name}: it needs about "
                       f"{worker.need >> 20} MiB beside the models in use, within a budget of "
                       f"{self.budget >> 20} MiB (memory.models_budget)")  # fmt: skip
                self.log(why)
                self.routes.refuse(worker.name, why, worker.wanted)
                worker.wanted = 0
            elif victims:
                for name in victims:  # it starts once they have exited
                    self._unload(self.workers[name], "memory", f"to make room for {worker.name}")
            else:
                worker.wanted = 0
                worker.unloaded = ""
                worker.started_at = time.monotonic()
                worker.log("starting on its first request")
                worker.sup.start()

    def _loaded(self, besides: ModelWorker) -> list[Loaded]:
        default = self.default
        rows = [Loaded(DEFAULT, default.need, 0.0, False)]
        for worker in self.workers.values():
            if worker is besides or not worker.holds_memory:
                continue
            busy, last, _ = self.routes.usage(worker.name)
            last = last or worker.started_at or 0.0
            running = worker.sup.state is State.RUNNING
            evictable = running and not worker.entry.pinned and not busy
            rows.append(Loaded(worker.name, worker.need, last, evictable))
        return rows

    def _unload_idle(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            entry, sup = worker.entry, worker.sup
            if entry.pinned or not entry.idle_unload or sup.state is not State.RUNNING:
                continue
            if sup.stop_requested:
                continue
            busy, last, _ = self.routes.usage(worker.name)
            since = last or worker.started_at or now
            if not busy and now - since >= entry.idle_unload:
                self._unload(worker, "idle", f"idle for {now - since:.0f}s")

    def _unload(self, worker: ModelWorker, why: str, detail: str) -> None:
        if worker.sup.stop_requested:
            return
        worker.unloaded = why
        worker.log(f"unloading: {detail}")
        self.routes.set(Route(asleep=True, state="stopping"), worker.name)  # no new requests
        worker.sup.request_stop()
        self.changed = True

    def _point(self) -> None:
        for worker in self.workers.values():
            self.routes.set(worker.route(self.stopping), worker.name)

    # -- the state file ------------------------------------------------------------------------

    def rows(self, to_wall: Callable[[float | None], float | None], default_worker: dict | None,
             default_url: str | None) -> list[dict]:  # fmt: skip
        """One row per served model for `mlxctl status`, the default's first (its `worker` and
        `worker_url` as the state file has them)."""
        sup, routes = self.default.sup, self.routes
        _, last, served = routes.usage(DEFAULT)
        out = [{"name": self.default.name, "default": True, "path": self.default.path,
                "aliases": ["claude-*"], "pinned": True, "idle_unload": 0,
                "state": routes.get(DEFAULT).state or sup.state.value.lower(),
                "worker": default_worker, "worker_url": default_url, "requests": served,
                "last_used_at": to_wall(last),
                "need_bytes": self.default.need, "cache_dir": str(paths.kv_cache_dir()),
                "log": str(paths.worker_log()), "restarts": sup.restarts,
                "fatal_reason": sup.fatal_reason}]  # fmt: skip
        for worker in self.workers.values():
            sup, entry = worker.sup, worker.entry
            _, last, served = self.routes.usage(worker.name)
            handle = sup.handle
            out.append({
                "name": worker.name,
                "default": False,
                "path": worker.model,
                "aliases": list(entry.aliases),
                "pinned": entry.pinned,
                "idle_unload": entry.idle_unload,
                "state": worker.route(self.stopping).state,
                "worker": None if handle is None else identity.Identity(
                    handle.pid, handle.create_time, handle.nonce).to_dict(),
                "worker_url": base_of(sup.spec.url) if handle and sup.spec else None,
                "requests": served,
                "last_used_at": to_wall(last),
                "need_bytes": worker.need,
                "cache_dir": str(cache_dir_of(worker.name)),
                "log": str(log_of(worker.name)),
                "restarts": sup.restarts,
                "fatal_reason": worker.error or sup.fatal_reason,
            })  # fmt: skip
        return out
