"""Every OS effect the state machine needs (spawn, signal, clock, HTTP probe) behind one seam.

`machine.Supervisor` only calls these methods, so unit tests swap in a fake clock and fake
processes; `RealSeam` is the thing `daemon.py` uses, a thin adapter over `mlxctl.system`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit

from mlxctl import worker_client
from mlxctl.system import identity, processes
from mlxctl.system.processes import WorkerSpec
from mlxctl.worker_client import Health

__all__ = ["Handle", "Health", "RealHandle", "RealSeam", "Seam", "WorkerSpec"]


class Handle(Protocol):
    nonce: str
    create_time: float

    @property
    def pid(self) -> int: ...  # read-only: RealHandle reads it from its Popen

    def poll(self) -> int | None: ...


class Seam(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def spawn(self, spec: WorkerSpec) -> Handle: ...

    def signal_group(self, handle: Handle, sig: int) -> None: ...

    def probe(self, url: str, timeout: float) -> Health | None: ...

    def cleanup(self, handle: Handle, spare: tuple[int, ...] = ()) -> None: ...

    def canary(self, spec: WorkerSpec, timeout: float) -> Canary: ...

    def vet(self, spec: WorkerSpec, timeout: float) -> Canary: ...


class Canary(Protocol):
    def verdict(self) -> str | None:
        """None while it runs; "" when the worker answered; else why it failed."""


class ThreadCanary:
    """The canary request on a thread of its own: the supervision loop never blocks on it."""

    def __init__(self, run: Callable[[], str]):
        self.result: str | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), name="canary", daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[], str]) -> None:
        try:
            self.result = run()
        except Exception as exc:  # a bug in the canary must not read as a stuck worker
            self.result = ""
            del exc

    def verdict(self) -> str | None:
        return self.result


@dataclass
class RealHandle:
    process: subprocess.Popen
    nonce: str
    create_time: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()


class RealSeam:
    """Real processes: the worker in its own process group, its output straight into a file."""

    def __init__(
        self,
        output_fd: Callable[[WorkerSpec], int],
        model: str = "",
        api_key: str | None = None,
        vetter: Callable[[WorkerSpec, float], str] | None = None,
    ):
        self.output_fd = output_fd  # a fresh fd per spawn, closed here once the child has it
        self.model = model  # what the canary asks for (the daemon updates it after a switch)
        self.api_key = api_key
        self.vetter = vetter  # smoke tests for a switch's next worker: "" passed, else why not
        # The other models' workers (several models by name): a cleanup must spare them too.
        self.others: Callable[[], tuple[int, ...]] = lambda: ()

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def spawn(self, spec: WorkerSpec) -> RealHandle:
        fd = self.output_fd(spec)
        try:
            process = processes.spawn_worker(spec, stdout=fd)
        finally:
            os.close(fd)
        ident = identity.Identity.of(process.pid, spec.nonce)
        return RealHandle(process, spec.nonce, ident.create_time if ident else 0.0)

    def signal_group(self, handle: Handle, sig: int) -> None:
        processes.signal_group(handle.pid, sig)

    def probe(self, url: str, timeout: float) -> Health | None:
        return worker_client.probe_health(url, timeout)

    def canary(self, spec: WorkerSpec, timeout: float) -> ThreadCanary:
        parts = urlsplit(spec.url)
        url = f"{parts.scheme}://{parts.netloc}"
        return ThreadCanary(partial(worker_client.canary, url, self.model, timeout, self.api_key))

    def vet(self, spec: WorkerSpec, timeout: float) -> ThreadCanary:
        vetter = self.vetter
        return ThreadCanary(lambda: vetter(spec, timeout) if vetter else "")

    def cleanup(self, handle: Handle, spare: tuple[int, ...] = ()) -> None:
        """After a worker exited: kill what is left of its group and its orphans, reap all but
        the trees of `spare` (the other workers of a switch)."""
        self.signal_group(handle, signal.SIGKILL)
        processes.reap_descendants((*spare, *self.others()))
