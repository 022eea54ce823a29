"""The supervisor process: holds the lock, runs the state machine, keeps the state file current.

Started detached by `mlxctl start` (`python -m mlxctl.supervisor.daemon ...`) or in the
foreground by `mlxctl start --foreground`. SIGTERM/SIGINT stop the worker and then the daemon.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
import time
from datetime import datetime

from mlxctl import config, paths
from mlxctl.logs import RotatingWriter
from mlxctl.supervisor import identity, statefile
from mlxctl.supervisor.lock import FileLock
from mlxctl.supervisor.machine import Supervisor, Timing
from mlxctl.supervisor.policy import RestartPolicy
from mlxctl.supervisor.seam import RealSeam, WorkerSpec, become_subreaper
from mlxctl.supervisor.states import State
from server import contract

TICK_SECONDS = 0.1
WORKER_COMMAND_ENV = "MLXCTL_WORKER_COMMAND"  # override the worker command (tests, custom servers)
STOP_REQUEST = "stop-request.json"
SPAWN_MARK = "--- mlxctl: starting the worker for"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # Like the worker's server: TIME_WAIT leftovers of our own probes do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def override_argv(template: str, model: str, host: str, port: int) -> list[str]:
    """`$MLXCTL_WORKER_COMMAND` with its {python}, {model}, {host} and {port} filled in."""
    fields = {"python": sys.executable, "model": model, "host": host, "port": port}
    return [part.format(**fields) for part in shlex.split(template)]


class Daemon:
    def __init__(self, args: argparse.Namespace, foreground: bool):
        self.args = args
        self.foreground = foreground
        self.settings = config.load()
        # Detached: `start` put a nonce in our environment. Foreground: none (pid + time only).
        self.nonce = os.environ.get(identity.NONCE_ENV, "")
        self.me = identity.current(self.nonce)
        self.started_wall = time.time()
        self.error: str | None = None
        self.announced = False
        paths.ensure_private_dir(paths.logs_dir())
        limits = (self.settings["logs.max_bytes"], self.settings["logs.backups"])
        rotate = None if foreground else self._point_stdio_at
        self.sup_log = RotatingWriter(paths.supervisor_log(), *limits, on_rotate=rotate)
        self.worker_log = RotatingWriter(paths.worker_log(), *limits)
        self.url = f"http://{self._url_host()}:{args.port}"

    def _url_host(self) -> str:
        host = self.args.host
        if host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @staticmethod
    def _point_stdio_at(fd: int) -> None:
        # After a rotation, stray output (tracebacks) must land in the new log, not the old one.
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def log(self, message: str) -> None:
        line = f"{datetime.now().isoformat(timespec='milliseconds')} {message}"
        self.sup_log.write_line(line)
        if self.foreground:
            print(line, file=sys.stderr, flush=True)

    def make_spec(self) -> WorkerSpec:
        from server.blas import worker_env

        nonce = identity.new_nonce()
        env = worker_env()
        env[identity.NONCE_ENV] = nonce
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings["api_key"]:
            env[contract.API_KEY_ENV] = self.settings["api_key"]  # not argv: others can read that
        argv, health_path = self._worker_command(env)
        # Marks where each run starts in the shared log (`start` reads progress from here on).
        self.worker_log.write_line(f"{SPAWN_MARK} {self.args.model_name} on {self.url}")
        return WorkerSpec(argv, env, nonce, f"{self.url}{health_path}")

    def _worker_command(self, env: dict[str, str]) -> tuple[list[str], str]:
        """The worker's argv (and health path): the current release's when one is set."""
        args = self.args
        template = os.environ.get(WORKER_COMMAND_ENV)
        if template:
            return override_argv(template, args.model, args.host, args.port), contract.HEALTH_PATH
        cache = config.cache_options(self.settings)
        if args.release:
            from dataclasses import replace

            from mlxctl.releases.record import launch
            from mlxctl.releases.store import ReleaseStore

            store = ReleaseStore()
            release = replace(store.get(args.release), model=args.model)
            spec = launch(release, store.folder(release.id), args.host, args.port, **cache)
            env.update(spec.env)
            return spec.argv, spec.health_path
        return contract.worker_argv(args.model, args.host, args.port, **cache), contract.HEALTH_PATH

    # -- state file ----------------------------------------------------------------------------

    def snapshot(self, sup: Supervisor | None) -> dict:
        mono, wall = time.monotonic(), time.time()

        def to_wall(t: float | None) -> float | None:
            return None if t is None else wall - (mono - t)

        worker = None
        if sup is not None and sup.handle is not None:
            h = sup.handle
            worker = identity.Identity(h.pid, h.create_time, h.nonce).to_dict()
        last_exit = None
        if sup is not None and sup.last_exit is not None:
            e = sup.last_exit
            last_exit = {"code": e.code, "reason": e.reason, "at": to_wall(e.at)}
        return {
            "version": 1,
            "state": sup.state.value if sup else State.STOPPED.value,
            "supervisor": self.me.to_dict(),
            "supervisor_started_at": self.started_wall,
            "start_id": self.args.start_id,
            "worker": worker,
            "worker_started_at": to_wall(sup.spawned_at) if sup and sup.handle else None,
            "running_since": to_wall(sup.running_since) if sup else None,
            "restarts": sup.restarts if sup else 0,
            "last_exit": last_exit,
            "fatal_reason": sup.fatal_reason if sup else None,
            "error": self.error,
            "model": self.args.model_name,
            "model_path": self.args.model,
            "host": self.args.host,
            "port": self.args.port,
            "url": self.url,
            "release": self.args.release or None,
            "updated_at": wall,
        }

    def write_state(self, sup: Supervisor | None) -> None:
        statefile.write_json(paths.state_file(), self.snapshot(sup))
        running = sup is not None and sup.state is State.RUNNING
        if self.foreground and running and not self.announced:
            self.announced = True  # the lines `mlxctl start` prints, once
            print(f"serving {self.args.model_name} at {self.url}", file=sys.stderr)
            print(f"  export ANTHROPIC_BASE_URL={self.url}", file=sys.stderr)
            print(f"  export OPENAI_BASE_URL={self.url}/v1", file=sys.stderr, flush=True)

    # -- orphans from a supervisor that was SIGKILLed -------------------------------------------

    def clean_up_orphan(self) -> None:
        try:
            previous = statefile.read_json(paths.state_file()) or {}
        except statefile.CorruptState:
            previous = {}
        orphan = identity.process_of(identity.Identity.from_dict(previous.get("worker")))
        if orphan is None:
            return  # gone, or the pid now belongs to another process: never signal it
        self.log(f"stopping the worker left by a dead supervisor (pid {orphan.pid})")
        grace = self.settings["restart.stop_timeout"]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(orphan.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                orphan.wait(wait)
                break
            except Exception:
                continue

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        lock = FileLock(paths.supervisor_lock())
        if not lock.acquire(blocking=False):
            self.log("another supervisor holds the lock; exiting")
            return 0
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
            s["restart.startup_timeout"],
            s["restart.stop_timeout"],
        )
        self.clean_up_orphan()
        (paths.run_dir() / STOP_REQUEST).unlink(missing_ok=True)
        self.log(f"supervisor started (pid {os.getpid()}), model {self.args.model_name}")
        if not port_is_free(self.args.host, self.args.port):
            self.error = f"port {self.args.port} is already in use by another program"
            self.log(self.error)
            self.write_state(None)
            return 1
        become_subreaper()
        seam = RealSeam(self.worker_log.write_line)
        sup = Supervisor(seam, self.make_spec, policy, timing, self.log, self.write_state)

        def on_signal(signum: int, frame: object) -> None:
            sup.request_stop(self._stop_timeout())

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            sup.start()
            last_write = time.monotonic()
            while not sup.done:
                sup.tick()
                if time.monotonic() - last_write > 5:
                    self.write_state(sup)  # keeps `updated_at` fresh for `status`
                    last_write = time.monotonic()
                time.sleep(TICK_SECONDS)
        except BaseException as exc:
            # A bug must not leave a worker nobody supervises: take it down, then re-raise.
            self.log(f"supervisor failed: {exc!r}; killing the worker")
            if sup.handle is not None:
                seam.signal_group(sup.handle, signal.SIGKILL)
                seam.cleanup(sup.handle)
            raise
        self.write_state(sup)
        self.log(f"supervisor exiting ({sup.state.value})")
        return 0 if sup.state is State.STOPPED else 1

    def _stop_timeout(self) -> float | None:
        try:
            request = statefile.read_json(paths.run_dir() / STOP_REQUEST) or {}
            (paths.run_dir() / STOP_REQUEST).unlink(missing_ok=True)
        except (statefile.CorruptState, OSError):
            return None
        timeout = request.get("timeout")
        return float(timeout) if isinstance(timeout, (int, float)) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlxctl-supervisor")
    parser.add_argument("--model", required=True, help="what the worker loads (resolved path)")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--start-id", default="")
    parser.add_argument("--release", default="", help="release id whose worker to run")
    args = parser.parse_args(argv)
    args.model_name = args.model_name or args.model
    return args


def main(argv: list[str] | None = None, foreground: bool = False) -> int:
    return Daemon(parse_args(argv), foreground).run()


if __name__ == "__main__":
    sys.exit(main())
