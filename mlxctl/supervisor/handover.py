"""Switches with no failed request: the next worker starts beside the serving one and takes the
route once healthy and vetted; the old one finishes what it serves (up to the grace), then stops.

Both run inside `machine.Supervisor.tick()`, on the seam, so the fake clock tests them too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from mlxctl.supervisor.seam import Canary, Handle, Seam
from mlxctl.system.processes import WorkerSpec


def base_of(url: str) -> str:
    """A worker's base URL from its health URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Successor:
    """The next worker on a private port of its own, serving nobody until it is vetted."""

    def __init__(self, handle: Handle, spec: WorkerSpec, began: float, reason: str):
        self.handle = handle
        self.spec = spec
        self.began = began
        self.reason = reason
        self.vetting: Canary | None = None

    def tick(self, seam: Seam, now: float, probe_timeout: float, startup_timeout: float,
             vet_timeout: float) -> str | None:  # fmt: skip
        """None while it starts; "" once healthy and vetted; else why it cannot take over."""
        code = self.handle.poll()
        if code is not None:
            return f"the new worker exited while starting (code {code})"
        if self.vetting is not None:
            verdict = self.vetting.verdict()
            return None if verdict is None else (verdict and f"smoke tests failed: {verdict}")
        health = seam.probe(self.spec.url, probe_timeout)
        if health is not None and health.failed:
            return f"the new worker cannot start: {health.failed}"
        if health is not None and health.status == 200:
            # Healthy means loaded and its cache restored; the smoke tests run off this loop.
            self.vetting = seam.vet(self.spec, vet_timeout)
        elif startup_timeout and now - self.began > startup_timeout:
            return f"the new worker was not healthy after {startup_timeout:g}s"
        return None


class Retiree:
    """A worker a switch replaced: no new requests reach it; it stops once idle or out of time."""

    def __init__(self, handle: Handle, url: str, drain_until: float):
        self.handle = handle
        self.url = url  # its base URL, as the front door counts requests in flight
        self.drain_until = drain_until
        self.term_at: float | None = None
        self.killed = False

    def tick(self, seam: Seam, now: float, busy: Callable[[str], bool], grace: float,
             hurry: bool) -> bool:  # fmt: skip
        """One step; True once it has exited (the caller cleans up after it)."""
        if self.handle.poll() is not None:
            return True
        if self.term_at is None:
            if busy(self.url) and now < self.drain_until and not hurry:
                return False  # still answering requests it took before the switch
            seam.signal_group(self.handle, signal.SIGTERM)
            self.term_at = now
        elif not self.killed and now - self.term_at >= grace:
            seam.signal_group(self.handle, signal.SIGKILL)
            self.killed = True
        return False
