"""Worker processes and ports: spawn in an own group, stop a group, reap, pid files.

Every `Popen`, `killpg` and port probe in mlxctl goes through here, so there is one way to stop a
process group and one identity format on disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from mlxctl.errors import PortInUseError, StateError
from mlxctl.system import identity, statefile
from server.edge import blas, contract

# Runs in the worker before exec: die with the parent (Linux), and never start as an orphan.
DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(70)
os.execvpe(sys.argv[2], sys.argv[2:], os.environ)
"""
KILL_WAIT_SECONDS = 5.0
PORT_HINT = "pick another with `--port N` or `mlxctl config set port N`"


@dataclass
class WorkerSpec:
    argv: list[str]
    env: dict[str, str]
    nonce: str = ""
    url: str = ""  # the health URL


def worker_spec(
    argv: list[str], extra_env: dict[str, str], api_key: str | None, url: str = ""
) -> WorkerSpec:
    """The environment every worker gets (supervised or side): BLAS, a fresh nonce, the key."""
    nonce = identity.new_nonce()
    env = blas.worker_env()
    env.update(extra_env)
    env[identity.NONCE_ENV] = nonce
    env["PYTHONUNBUFFERED"] = "1"
    if api_key:
        env[contract.API_KEY_ENV] = api_key  # not argv: others can read that
    return WorkerSpec(argv, env, nonce, url)


def spawn_worker(spec: WorkerSpec, stdout: int | IO[Any] = subprocess.PIPE) -> subprocess.Popen:
    """Start `spec` through the die-with-parent shim, in its own process group, stdin closed."""
    return subprocess.Popen(
        [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *spec.argv],
        env=spec.env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        process_group=0,  # its own group, so one signal reaches the worker and its children
        close_fds=True,
    )


def signal_group(pid: int, sig: int) -> bool:
    """Signal the group `pid` leads; False when it is gone (or not ours to signal)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_exited(proc: psutil.Process, timeout: float, poll: float = 0.02) -> bool:
    """Until `proc` has exited (True) or `timeout` passes (False). A zombie has exited: a detached
    process is reaped by whoever adopted it, which may take seconds (psutil's wait counts it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(poll)
    return False


def stop_group(proc: psutil.Process | subprocess.Popen, grace: float) -> bool:
    """SIGTERM the group `proc` leads, SIGKILL after `grace` seconds; True when it had to force."""
    steps = [(signal.SIGKILL, KILL_WAIT_SECONDS)]
    if grace > 0:
        steps.insert(0, (signal.SIGTERM, grace))
    for sig, wait in steps:
        if not signal_group(proc.pid, sig):
            return False
        try:
            proc.wait(wait)
            return sig == signal.SIGKILL
        except (psutil.TimeoutExpired, subprocess.TimeoutExpired):
            continue
    return True


def reap_descendants(spare: Iterable[int] = ()) -> None:
    """Kill and reap every descendant (orphans come back to us as the child subreaper), except
    the trees of `spare` (workers still serving or finishing during a switch)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    kept: set[int] = set()
    for pid in spare:
        kept.add(pid)
        with contextlib.suppress(psutil.Error):
            kept.update(p.pid for p in psutil.Process(pid).children(recursive=True))
    children = [child for child in children if child.pid not in kept]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    for child in children:
        # ChildProcessError: not our direct child, or already reaped by Popen.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)


def sweep(worker: identity.Identity | None) -> list[int]:
    """Kill what is left of a dead worker's tree: every process carrying its nonce (children
    inherit the environment, even those that left its group), else its process group."""
    if worker is None:
        return []
    found = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if proc.pid == os.getpid() or proc.info["create_time"] < worker.create_time - 0.05:
                continue  # born before the worker: not its descendant
            try:
                ours = bool(worker.nonce) and proc.environ().get(identity.NONCE_ENV) == worker.nonce
            except psutil.AccessDenied:
                ours = os.getpgid(proc.pid) == worker.pid
        except (psutil.Error, OSError):
            continue
        if ours:
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(found, timeout=KILL_WAIT_SECONDS)
    return [proc.pid for proc in found]


def become_subreaper() -> None:
    """Linux: orphaned descendants of the worker are re-parented to us, so we can reap them."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


# -- ports ---------------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # Like the worker's server: TIME_WAIT leftovers of our own probes do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_in_use(port: int, hint: str = PORT_HINT) -> PortInUseError:
    """The one error (and text) for a port another program holds."""
    return PortInUseError(f"port {port} is already in use by another program", hint=hint)


def require_free_port(host: str, port: int) -> None:
    if not port_is_free(host, port):
        raise port_in_use(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- pid files -----------------------------------------------------------------------------------


class PidFile:
    """A process's identity (pid, create time, nonce) in an atomic JSON file; never a bare pid."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, ident: identity.Identity) -> None:
        statefile.write_json(self.path, ident.to_dict())

    def process(self) -> psutil.Process | None:
        """The live process the file names; None when absent, unreadable or the pid was reused."""
        try:
            data = statefile.read_json(self.path)
        except StateError:
            return None
        return identity.process_of(identity.Identity.from_dict(data))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# -- the supervisor daemon -----------------------------------------------------------------------


def spawn_detached(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `argv` in its own session, no stdin, output appended to `log_path`."""
    with open(log_path, "ab") as log:
        # Its own session: it outlives this terminal.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def run_attached(argv: list[str], env: dict[str, str]) -> int:
    """Run `argv` on this terminal until it exits; Ctrl-C is its to handle, not ours."""
    process = subprocess.Popen(argv, env=env)
    # The terminal sends SIGINT to both of us: the child stops cleanly, we wait for it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def run_client(argv: list[str], env: dict[str, str]) -> int:
    """Run a client program (`claude`) on this terminal; its exit status as a shell reports it."""
    code = run_attached(argv, env)
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N
