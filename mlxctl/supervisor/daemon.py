"""The supervisor process: holds the lock, runs the state machine, keeps the state file current.

Started detached by `mlxctl start` (`python -m mlxctl.supervisor.daemon ...`) or in the
foreground by `mlxctl start --foreground`. SIGTERM/SIGINT stop the worker and then the daemon.
The service's address is the front door's (mlxctl/front_door/, a thread of this process); each
worker listens on a private loopback port, so a switch starts the next one beside it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime

from mlxctl import config, paths, worker_client
from mlxctl.errors import PortInUseError
from mlxctl.front_door.serve import FrontDoor, open_front_door
from mlxctl.logs import RotatingWriter
from mlxctl.supervisor import leftovers
from mlxctl.supervisor import state as state_file
from mlxctl.supervisor.daemon_state import count_failed_start, snapshot
from mlxctl.supervisor.fleet import Fleet
from mlxctl.supervisor.fleet_wiring import open_fleet
from mlxctl.supervisor.handover import base_of
from mlxctl.supervisor.machine import Supervisor, Timing
from mlxctl.supervisor.memory import MemoryGuard, MemoryLimits
from mlxctl.supervisor.policy import RestartPolicy, auto_startup_timeout
from mlxctl.supervisor.seam import RealSeam
from mlxctl.supervisor.states import State
from mlxctl.supervisor.switches import Switches, weights_bytes
from mlxctl.supervisor.worker_command import WORKER_HOST, worker_command
from mlxctl.supervisor.worker_output import SPAWN_MARK, WorkerOutput
from mlxctl.system import identity, processes
from mlxctl.system.lock import FileLock
from mlxctl.system.processes import WorkerSpec

TICK_SECONDS = 0.1
STATE_RETRY_SECONDS = 1.0  # a failed state write (a full disk) is tried again this often


class Daemon:
    def __init__(self, args: argparse.Namespace, foreground: bool):
        self.args = args
        self.foreground = foreground  # echo to the terminal, until it goes away
        self.hung_up = False
        self.settings = config.load()
        for item in args.set:  # `mlxctl start --ranks 2 ...`: config values for this run
            key, _, text = item.partition("=")
            self.settings[key] = config.parse_value(key, text)
        # `start` puts a nonce in our environment (without one: pid + create time only).
        self.nonce = os.environ.get(identity.NONCE_ENV, "")
        self.me = identity.current(self.nonce)
        self.started_wall = time.time()
        self.error: str | None = None
        self.announced = False
        self.memory: MemoryGuard | None = None
        self.counted = False  # this run's FATAL (or stable run) is in failed-starts.json
        self.state_failing: str | None = None  # the last state write's error, until one succeeds
        paths.ensure_private_dir(paths.logs_dir())
        limits = (self.settings["logs.max_bytes"], self.settings["logs.backups"])
        rotate = None if foreground else self._point_stdio_at
        self.sup_log = RotatingWriter(paths.supervisor_log(), *limits, on_rotate=rotate)
        self.output = WorkerOutput(paths.worker_log(), *limits, log=self.log)
        self.url = worker_client.base_url(args.host, args.port)
        self.front_door: FrontDoor | None = None
        self.switches = Switches(self)
        self.fleet: Fleet | None = None  # the [models.NAME] workers

    @staticmethod
    def _point_stdio_at(fd: int) -> None:
        # After a rotation, stray output (tracebacks) must land in the new log, not the old one.
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def log(self, message: str) -> None:
        line = f"{datetime.now().isoformat(timespec='milliseconds')} {message}"
        self.sup_log.write_line(line)
        self._echo(line)

    def _echo(self, *lines: str) -> None:
        if not self.foreground:
            return
        try:
            for line in lines:
                print(line, file=sys.stderr, flush=True)
        except OSError:
            self._detach("writing to the terminal failed")

    def _detach(self, why: str) -> None:
        """The terminal is gone: keep supervising, log to the file only (like a detached start)."""
        self.foreground = False
        with open(paths.supervisor_log(), "ab") as log:
            self._point_stdio_at(log.fileno())
        self.sup_log.on_rotate = self._point_stdio_at
        self.log(f"{why}: the terminal is gone; carrying on, logging to this file only")

    def make_spec(self, args: argparse.Namespace | None = None) -> WorkerSpec:
        args = args or self.args
        # A fresh private port per worker: a switch's next one starts beside the serving one.
        port = processes.free_port(WORKER_HOST)
        private = worker_client.base_url(WORKER_HOST, port)
        argv, health_path, extra_env = worker_command(args, self.settings, port)
        # Marks where each run starts in the shared log (`start` reads progress from here on).
        self.output.mark(f"{SPAWN_MARK} {args.model_name} on {private} (front door {self.url})")
        url = f"{private}{health_path}"
        # The worker keeps its own key check: its loopback port is open to every local user.
        return processes.worker_spec(argv, extra_env, self.settings["api_key"], url)

    def output_tail(self) -> str:
        return self.output.tail()

    # -- state file ----------------------------------------------------------------------------

    def write_state(self, sup: Supervisor | None) -> None:
        # A full disk must not take the service down: log it, keep serving, retry (the loop).
        try:
            state_file.write(snapshot(self, sup))
            if not self.counted:
                self.counted = count_failed_start(sup, self.settings["restart.stable_after"])
        except OSError as exc:
            if self.state_failing is None:
                self.log(f"state write failed ({exc}); still serving, retrying every "
                         f"{STATE_RETRY_SECONDS:g}s")  # fmt: skip
            self.state_failing = str(exc)
            return
        if self.state_failing is not None:
            self.state_failing = None
            self.log("state written again")
        running = sup is not None and sup.state is State.RUNNING
        if self.foreground and running and not self.announced:
            self.announced = True  # the lines `mlxctl start` prints, once
            self._echo(
                f"serving {self.args.model_name} at {self.url}",
                f"  export ANTHROPIC_BASE_URL={self.url}",
                f"  export OPENAI_BASE_URL={self.url}/v1",
            )

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        lock = FileLock(paths.supervisor_lock())
        if not lock.acquire(blocking=False):
            self.log("another supervisor holds the lock; exiting")
            return 0
        lock.record_owner(self.me.to_dict())  # `stop` finds us even without a state file
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        s = self.settings
        policy = RestartPolicy(
            s["restart.backoff_initial"],
            s["restart.backoff_factor"],
            s["restart.backoff_max"],
            s["restart.stable_after"],
            s["restart.max_fast_failures"],
        )
        timing = Timing(
            s["restart.health_interval"],
            s["restart.liveness_timeout"],
            s["restart.startup_timeout"] or auto_startup_timeout(weights_bytes(self.args.model)),
            s["restart.stop_timeout"],
            s["restart.canary_interval"],
            s["restart.canary_timeout"],
        )
        leftovers.stop_orphans(s["restart.stop_timeout"], self.log)
        leftovers.remove_stale_temps(self.log)
        state_file.clear_requests()
        self.log(f"supervisor started (pid {os.getpid()}), model {self.args.model_name}")
        try:
            where = (self.args.host, self.args.port)
            self.front_door = open_front_door(s, *where, timing.startup_timeout)
            self.log(f"front door open on {self.url}")
        except PortInUseError as exc:
            self.error = str(exc)
            self.log(self.error)
            self.write_state(None)
            return 1
        processes.become_subreaper()
        seam = RealSeam(
            lambda spec: self.output.open_for(spec.argv),
            self.args.model,
            s["api_key"] or None,
            self.switches.vet,
        )
        self.switches.seam = seam
        routes = self.switches.routes = self.front_door.routes
        sup = Supervisor(
            seam,
            self.make_spec,
            policy,
            timing,
            self.log,
            self._changed,
            busy=lambda url: routes.in_flight(url) > 0,
            on_handover=lambda verdict: self._changed(sup, verdict),
        )
        self.memory = self._memory_guard(sup)
        door = self.front_door
        fleet = self.fleet = open_fleet(s, self.args, sup, policy, timing, door, self.log)
        seam.others = fleet.others_than_default()

        def on_signal(signum: int, frame: object) -> None:
            grace = self._stop_timeout()
            sup.request_stop(grace)
            fleet.stop(grace)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # A closed terminal (SIGHUP) is no reason to stop serving: note it, stop echoing.
        signal.signal(signal.SIGHUP, lambda signum, frame: setattr(self, "hung_up", True))
        self.output.start_keeper()  # log rotation on its own thread: never a stalled tick
        try:
            sup.start()
            last_write = time.monotonic()
            while not (sup.done and fleet.done):
                sup.tick()
                if self.switches.take(sup) | fleet.tick():
                    self.write_state(sup)
                if self.memory.restart_wanted:
                    sup.request_restart(self.memory.restart_wanted)
                    self.memory.restart_wanted = None
                if self.hung_up and self.foreground:
                    self._detach("SIGHUP")
                retry = self.state_failing is not None
                if time.monotonic() - last_write > (STATE_RETRY_SECONDS if retry else 5):
                    self.write_state(sup)  # keeps `updated_at` fresh for `status`
                    last_write = time.monotonic()
                time.sleep(TICK_SECONDS)
        except BaseException as exc:
            # A bug must not leave a worker nobody supervises: take it down, then re-raise.
            self.log(f"supervisor failed: {exc!r}; killing the worker")
            fleet.kill()
            if sup.handle is not None:
                seam.signal_group(sup.handle, signal.SIGKILL)
                seam.cleanup(sup.handle)
            self.error = f"supervisor failed: {exc!r}"
            self.write_state(None)  # never leave the state file saying RUNNING
            raise
        finally:
            self.output.stop_keeper()
            self.front_door.stop()
        self.write_state(sup)
        self.log(f"supervisor exiting ({sup.state.value})")
        return 0 if sup.state is State.STOPPED else 1

    def _memory_guard(self, sup: Supervisor) -> MemoryGuard:
        s = self.settings
        limits = MemoryLimits.from_config(s["memory.soft_limit"], s["memory.hard_limit"])

        def current() -> tuple[int, str] | None:
            handle, spec = sup.handle, sup.spec
            if sup.state is not State.RUNNING or handle is None or spec is None:
                return None
            return handle.pid, base_of(spec.url)

        guard = MemoryGuard(limits, current, s["api_key"] or None, self.log)
        guard.start()
        return guard

    def _stop_timeout(self) -> float | None:
        return state_file.take_stop_request()

    # -- the front door and switches (switches.py) ------------------------------------------------

    def _changed(self, sup: Supervisor, handover: str | None = None) -> None:
        """Every state change and a handover's verdict: the front door's route, the state file."""
        if handover is not None:
            self.switches.handed_over(handover)
        self.switches.changed(sup)
        self.write_state(sup)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlxctl-supervisor")
    parser.add_argument("--model", required=True, help="what the worker loads (resolved path)")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--start-id", default="")
    parser.add_argument("--release", default="", help="release id whose worker to run")
    parser.add_argument("--foreground", action="store_true", help="log to stderr too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    args.model_name = args.model_name or args.model
    return args


def main(argv: list[str] | None = None, foreground: bool = False) -> int:
    args = parse_args(argv)
    return Daemon(args, foreground or args.foreground).run()


if __name__ == "__main__":
    sys.exit(main())
