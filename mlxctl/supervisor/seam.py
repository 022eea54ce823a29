"""Every OS effect the state machine needs (spawn, signal, clock, HTTP probe) behind one seam.

`machine.Supervisor` only calls these methods, so unit tests swap in a fake clock and fake
processes; `RealSeam` is the thing `daemon.py` uses, a thin adapter over `mlxctl.system`.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mlxctl import worker_client
from mlxctl.system import identity, processes
from mlxctl.system.processes import WorkerSpec

__all__ = ["Handle", "RealHandle", "RealSeam", "Seam", "WorkerSpec"]


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

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def spawn(self, spec: WorkerSpec) -> RealHandle:
        process = processes.spawn_worker(spec)
        ident = identity.Identity.of(process.pid, spec.nonce)
        handle = RealHandle(process, spec.nonce, ident.create_time if ident else 0.0)
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
        processes.signal_group(handle.pid, sig)

    def probe(self, url: str, timeout: float) -> int | None:
        return worker_client.probe(url, timeout)

    def cleanup(self, handle: Handle) -> None:
        """After the worker exited: kill what is left of its group and its orphans, reap all."""
        self.signal_group(handle, signal.SIGKILL)
        processes.reap_descendants()
        if isinstance(handle, RealHandle) and handle.reader is not None:
            handle.reader.join(timeout=2)
