"""Every OS effect the state machine needs (spawn, signal, clock, HTTP probe) behind one seam.

`machine.Supervisor` only calls these methods, so unit tests swap in a fake clock and fake
processes; `RealSeam` is the thing `daemon.py` uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import psutil

# Runs in the worker before exec: die with the supervisor (Linux), and never start as an orphan.
_SHIM = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(70)
os.execvpe(sys.argv[2], sys.argv[2:], os.environ)
"""


@dataclass
class WorkerSpec:
    argv: list[str]
    env: dict[str, str]
    nonce: str
    url: str  # the /health URL


class Handle(Protocol):
    pid: int
    nonce: str
    create_time: float

    def poll(self) -> int | None: ...


class Seam(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def spawn(self, spec: WorkerSpec) -> Handle: ...

    def signal_group(self, handle: Handle, sig: int) -> None: ...

    def probe(self, url: str, timeout: float) -> int | None: ...

    def cleanup(self, handle: Handle) -> None: ...


@dataclass
class RealHandle:
    process: subprocess.Popen
    nonce: str
    create_time: float
    last_line: str = ""
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()


class RealSeam:
    """Real processes: the worker in its own process group, its output piped to `sink` by line."""

    def __init__(self, sink: Callable[[str], None]):
        self.sink = sink
        import httpx

        # trust_env=False: a proxy setting must never route the loopback health probe.
        self.http = httpx.Client(trust_env=False)

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def spawn(self, spec: WorkerSpec) -> RealHandle:
        argv = [sys.executable, "-c", _SHIM, str(os.getpid()), *spec.argv]
        process = subprocess.Popen(
            argv,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, so one signal reaches the worker and its children
            close_fds=True,
        )
        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        handle = RealHandle(process, spec.nonce, create_time)
        handle.reader = threading.Thread(target=self._pump, args=(handle,), daemon=True)
        handle.reader.start()
        return handle

    def _pump(self, handle: RealHandle) -> None:
        for raw in iter(handle.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.strip():
                handle.last_line = line
            self.sink(line)
        handle.process.stdout.close()

    def signal_group(self, handle: Handle, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(handle.pid, sig)

    def probe(self, url: str, timeout: float) -> int | None:
        try:
            return self.http.get(url, timeout=timeout).status_code
        except Exception:
            return None

    def cleanup(self, handle: Handle) -> None:
        """After the worker exited: kill what is left of its group and its orphans, reap all."""
        self.signal_group(handle, signal.SIGKILL)
        reap_descendants()
        if isinstance(handle, RealHandle) and handle.reader is not None:
            handle.reader.join(timeout=2)


def reap_descendants() -> None:
    """Kill and reap every descendant (orphans come back to us as the child subreaper)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    for child in children:
        # ChildProcessError: not our direct child, or already reaped by Popen.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)


def become_subreaper() -> None:
    """Linux: orphaned descendants of the worker are re-parented to us, so we can reap them."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
