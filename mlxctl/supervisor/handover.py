"""Switches with no failed request: the next worker starts beside the serving one and takes the
route once healthy and vetted; the old one finishes what it serves (up to the grace), then stops.

`Handover` carries a switch for the state machine (`machine.Supervisor` owns one and calls its
`tick` from its own), on the seam, so the fake clock tests it too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from mlxctl.supervisor.seam import Canary, Handle, Seam
from mlxctl.supervisor.states import State
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


class Times(Protocol):
    """The handover's share of machine.Timing."""

    @property
    def probe_timeout(self) -> float: ...

    @property
    def startup_timeout(self) -> float: ...

    @property
    def canary_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...


class Serving(Protocol):
    """What a handover needs of the state machine it switches (machine.Supervisor)."""

    seam: Seam
    state: State
    stop_requested: bool
    handle: Handle | None
    spec: WorkerSpec | None
    busy: Callable[[str], bool]
    on_handover: Callable[[str], None]
    log: Callable[[str], None]

    @property
    def timing(self) -> Times: ...

    def take_over(self, handle: Handle, spec: WorkerSpec, began: float, now: float) -> None: ...


class Handover:
    """A switch in progress (its successor) and the workers switches replaced (retirees)."""

    def __init__(self, sup: Serving):
        self.sup = sup
        self.successor: Successor | None = None
        self.retirees: list[Retiree] = []

    def request(self, reason: str, make_spec: Callable[[], WorkerSpec]) -> bool:
        """While RUNNING: start the next worker beside the serving one (the switch goes on in
        `tick`). False when no switch can start now."""
        sup = self.sup
        serving = sup.handle
        if sup.state is not State.RUNNING or sup.stop_requested or self.successor is not None:
            return False
        assert serving is not None, "RUNNING without a worker process"
        spec = make_spec()
        handle = sup.seam.spawn(spec)
        self.successor = Successor(handle, spec, sup.seam.now(), reason)
        sup.log(f"starting the next worker (pid {handle.pid}) beside pid {serving.pid}: {reason}")
        return True

    def tick(self, now: float) -> None:
        self._tick_successor(now)
        self._tick_retirees(now)

    def _tick_successor(self, now: float) -> None:
        sup, nxt = self.sup, self.successor
        if nxt is None:
            return
        if sup.stop_requested or sup.state is not State.RUNNING:
            self._drop_successor(f"the service went {sup.state.value} during the switch")
            return
        t = sup.timing
        verdict = nxt.tick(sup.seam, now, t.probe_timeout, t.startup_timeout, t.canary_timeout)
        if verdict is None:
            return
        if verdict:
            self._drop_successor(verdict)
            return
        # The switch, in one step: new requests go to the successor; the old one drains.
        old, old_spec = sup.handle, sup.spec
        assert old is not None and old_spec is not None, "RUNNING without a worker process"
        self.retirees.append(Retiree(old, base_of(old_spec.url), now + t.stop_timeout))
        self.successor = None
        sup.take_over(nxt.handle, nxt.spec, nxt.began, now)
        sup.log(f"worker pid {nxt.handle.pid} took over from pid {old.pid} ({nxt.reason}); "
                "the old one finishes its requests, then stops")  # fmt: skip
        sup.on_handover("")

    def _drop_successor(self, why: str) -> None:
        sup, nxt = self.sup, self.successor
        assert nxt is not None
        self.successor = None
        sup.seam.signal_group(nxt.handle, signal.SIGKILL)
        deadline = sup.seam.now() + 5.0
        while nxt.handle.poll() is None and sup.seam.now() < deadline:
            sup.seam.sleep(0.02)
        sup.seam.cleanup(nxt.handle, self.spare(nxt.handle))
        sup.log(f"the switch failed: {why}; the serving worker carries on")
        sup.on_handover(why)

    def _tick_retirees(self, now: float) -> None:
        sup = self.sup
        grace, hurry = sup.timing.stop_timeout, sup.stop_requested
        for old in list(self.retirees):
            if old.tick(sup.seam, now, sup.busy, grace, hurry):
                self.retirees.remove(old)
                sup.seam.cleanup(old.handle, self.spare(old.handle))
                sup.log(f"the replaced worker (pid {old.handle.pid}) has stopped")

    def spare(self, gone: Handle) -> tuple[int, ...]:
        """The workers still alive besides `gone`: a cleanup must not take them down."""
        alive = [self.sup.handle, *(r.handle for r in self.retirees)]
        if self.successor is not None:
            alive.append(self.successor.handle)
        return tuple(h.pid for h in alive if h is not None and h is not gone)
