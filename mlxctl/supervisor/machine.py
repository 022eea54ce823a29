"""The supervision loop as a state machine over a seam: spawn, probe, restart, stop.

`tick()` does one step and never blocks for long, so the daemon calls it in a loop and tests
call it against a fake clock. Every state change goes through `states.transition`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, replace

from mlxctl.supervisor.handover import Handover, Retiree, Successor
from mlxctl.supervisor.policy import Decision, RestartPolicy, RestartTracker
from mlxctl.supervisor.seam import Canary, Handle, Seam
from mlxctl.supervisor.states import State, transition
from mlxctl.system.processes import WorkerSpec


def describe_exit(code: int | None) -> str:
    """`code 1` or `killed by SIGKILL` (Popen reports death by signal N as -N)."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"code {code}"


@dataclass(frozen=True)
class Timing:
    health_interval: float = 2.0  # seconds between /health probes of a RUNNING worker
    liveness_timeout: float = 30.0  # no /health answer for this long -> kill and restart
    startup_timeout: float = 0.0  # 0: no limit (the daemon fills in the config's auto value)
    stop_timeout: float = 15.0  # grace between SIGTERM and SIGKILL
    canary_interval: float = 0.0  # seconds between canary requests while RUNNING; 0: none
    canary_timeout: float = 60.0

    @property
    def probe_timeout(self) -> float:
        return max(0.2, min(2.0, self.liveness_timeout / 3))


@dataclass
class ExitInfo:
    code: int | None
    reason: str
    at: float  # seam clock


class Supervisor:
    def __init__(
        self,
        seam: Seam,
        make_spec: Callable[[], WorkerSpec],
        policy: RestartPolicy | None = None,
        timing: Timing | None = None,
        log: Callable[[str], None] = lambda line: None,
        on_change: Callable[[Supervisor], None] = lambda sup: None,
        busy: Callable[[str], bool] = lambda url: False,
        on_handover: Callable[[str], None] = lambda verdict: None,
    ):
        self.seam = seam
        self.make_spec = make_spec
        self.tracker = RestartTracker(policy or RestartPolicy())
        self.timing = timing or Timing()
        self.log = log
        self.on_change = on_change
        self.state = State.STOPPED
        self.handle: Handle | None = None
        self.spec: WorkerSpec | None = None
        self.restarts = 0
        self.ever_healthy = False
        self.last_exit: ExitInfo | None = None
        self.fatal_reason: str | None = None
        self.spawned_at = 0.0
        self.running_since: float | None = None
        self.last_answer = 0.0
        self.next_probe = 0.0
        self.backoff_until = 0.0
        self.stop_requested = False
        self.stop_deadline = 0.0
        self.killed = False
        self.canary: Canary | None = None
        self.restart_reason: str | None = None  # a graceful restart we asked for
        self.next_canary = 0.0
        self.busy = busy  # does the worker at this base URL still answer requests?
        self.on_handover = on_handover  # a switch's verdict: "" it took over, else why not
        self.handover = Handover(self)

    # -- transitions -------------------------------------------------------------------------

    def _enter(self, new: State, detail: str = "") -> None:
        self.state = transition(self.state, new)
        pid = f" (pid {self.handle.pid})" if self.handle is not None else ""
        self.log(f"worker entered {new.value}{pid}{': ' + detail if detail else ''}")
        self.on_change(self)

    @property
    def done(self) -> bool:
        """The daemon exits when the worker is stopped for good or FATAL."""
        settled = self.successor is None and not self.retirees
        return (
            settled
            and self.state in (State.STOPPED, State.FATAL)
            and (self.stop_requested or self.state is State.FATAL)
        )

    @property
    def _process(self) -> Handle:
        """The worker process: set from each spawn until its exit is handled."""
        assert self.handle is not None, f"no worker process in {self.state.value}"
        return self.handle

    @property
    def _spawned_spec(self) -> WorkerSpec:
        assert self.spec is not None, "no spec before the first spawn"
        return self.spec

    # -- commands ----------------------------------------------------------------------------

    def start(self) -> None:
        """STOPPED/FATAL -> STARTING; `mlxctl start` also forgets earlier fast failures."""
        self.tracker.reset()
        self.fatal_reason = None
        self.stop_requested = False
        self._spawn()

    def request_stop(self, timeout: float | None = None) -> None:
        self.stop_requested = True
        if timeout is not None:
            self.timing = replace(self.timing, stop_timeout=timeout)

    def request_restart(self, reason: str) -> None:
        """RUNNING -> STOPPING -> EXITED -> the policy: a graceful restart (memory pressure)."""
        if self.state is State.RUNNING and not self.stop_requested:
            self.restart_reason = reason
            self.seam.signal_group(self._process, signal.SIGTERM)
            self.stop_deadline = self.seam.now() + self.timing.stop_timeout
            self.killed = False
            self._enter(State.STOPPING, f"restarting: {reason}")

    def request_handover(self, reason: str, make_spec: Callable[[], WorkerSpec]) -> bool:
        """While RUNNING: start the next worker beside this one (handover.py carries it on)."""
        return self.handover.request(reason, make_spec)

    @property
    def successor(self) -> Successor | None:
        return self.handover.successor

    @property
    def retirees(self) -> list[Retiree]:
        return self.handover.retirees

    def take_over(self, handle: Handle, spec: WorkerSpec, began: float, now: float) -> None:
        """A switch's next worker serves from now on (the handover retired the old one)."""
        t = self.timing
        self.handle, self.spec = handle, spec
        self.spawned_at, self.running_since, self.last_answer = began, now, now
        self.next_probe, self.next_canary = now + t.health_interval, now + t.canary_interval
        self.canary = None
        self.on_change(self)

    # -- one step ----------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.seam.now()
        state = self.state
        if self.stop_requested and state in (State.STARTING, State.RUNNING):
            # STARTING/RUNNING -> STOPPING: SIGTERM to the whole group, then wait out the grace.
            self.seam.signal_group(self._process, signal.SIGTERM)
            self.stop_deadline = now + self.timing.stop_timeout
            self.killed = False
            self._enter(State.STOPPING, f"SIGTERM, {self.timing.stop_timeout:g}s grace")
        elif self.stop_requested and state is State.BACKOFF:
            # BACKOFF -> STOPPED: nothing is running, just cancel the pending restart.
            self._enter(State.STOPPED, "restart cancelled")
        elif self.stop_requested and state is State.FATAL:
            pass  # FATAL stays FATAL: `status` must still show why
        elif state is State.STOPPING:
            self._tick_stopping(now)
        elif state is State.STARTING:
            self._tick_starting(now)
        elif state is State.RUNNING:
            self._tick_running(now)
        elif state is State.BACKOFF and now >= self.backoff_until:
            # BACKOFF -> STARTING: the delay is over.
            self.restarts += 1
            self._spawn()
        self.handover.tick(now)

    def _tick_stopping(self, now: float) -> None:
        code = self._process.poll()
        if code is not None and self.restart_reason and not self.stop_requested:
            # STOPPING -> EXITED: the restart we asked for; the policy spaces repeated ones.
            reason, self.restart_reason = self.restart_reason, None
            self._exited(now, code, reason)
        elif code is not None:
            # STOPPING -> STOPPED: gone; kill and reap whatever it left behind.
            self.restart_reason = None
            self.seam.cleanup(self._process, self.handover.spare(self._process))
            self.last_exit = ExitInfo(code, "stopped", now)
            self._enter(State.STOPPED, describe_exit(code))
            self.handle = None
            self.running_since = None
        elif now >= self.stop_deadline and not self.killed:
            # Grace period over: SIGKILL the group; the next ticks see it gone.
            self.log(f"worker ignored SIGTERM for {self.timing.stop_timeout:g}s, sending SIGKILL")
            self.seam.signal_group(self._process, signal.SIGKILL)
            self.killed = True

    def _tick_starting(self, now: float) -> None:
        code = self._process.poll()
        if code is not None:
            self._exited(now, code, f"exited while loading ({describe_exit(code)})")
            return
        health = self.seam.probe(self._spawned_spec.url, self.timing.probe_timeout)
        if health is not None and health.failed:
            # STARTING -> EXITED -> FATAL: it says it cannot start (the model failed to load);
            # a retry would load the same broken model again.
            self._kill_and_wait(now)
            self._exited(now, self._process.poll(), health.failed, permanent=True)
        elif health is not None and health.status == 200:
            # STARTING -> RUNNING: healthy, not merely forked.
            self.ever_healthy = True
            self.running_since = now
            self.last_answer = now
            self.next_probe = now + self.timing.health_interval
            self.next_canary = now + self.timing.canary_interval
            self._enter(State.RUNNING)
        elif self.timing.startup_timeout and now - self.spawned_at > self.timing.startup_timeout:
            # STARTING -> EXITED: never became healthy; kill the group and let the policy decide.
            self._kill_and_wait(now)
            self._exited(
                now, self._process.poll(), f"not healthy after {self.timing.startup_timeout:g}s"
            )
        # A 503 or a refused connection means still loading: not a hang, keep waiting.

    def _tick_running(self, now: float) -> None:
        code = self._process.poll()
        if code is not None:
            self._exited(now, code, f"exited unexpectedly ({describe_exit(code)})")
            return
        if self._tick_canary(now) or now < self.next_probe:
            return
        health = self.seam.probe(self._spawned_spec.url, self.timing.probe_timeout)
        now = self.seam.now()
        self.next_probe = now + self.timing.health_interval
        if health is not None and health.stuck:
            # RUNNING -> EXITED: up but not working (its watchdog dumped the stacks to the log).
            self._restart_stuck(now, f"stuck: {health.stuck}")
        elif health is not None:
            self.last_answer = now  # any answer (even 503 under load) means it is alive
            return
        silent = now - self.last_answer
        if silent >= self.timing.liveness_timeout:
            # RUNNING -> EXITED: wedged (e.g. SIGSTOPped); SIGKILL the whole group.
            self.log(f"worker did not answer /health for {silent:.1f}s, killing its group")
            self._kill_and_wait(now)
            self._exited(now, self._process.poll(), f"no /health answer for {silent:.0f}s")

    def _tick_canary(self, now: float) -> bool:
        """Start a due canary or read its verdict; True when it failed and the worker went."""
        if not self.timing.canary_interval:
            return False
        if self.canary is None:
            if now >= self.next_canary:
                self.canary = self.seam.canary(self._spawned_spec, self.timing.canary_timeout)
            return False
        verdict = self.canary.verdict()
        if verdict is None:
            return False
        self.canary = None
        self.next_canary = now + self.timing.canary_interval
        if verdict:
            # RUNNING -> EXITED: a 1-token request through the real path did not come back.
            self._restart_stuck(now, f"canary failed: {verdict}")
            return True
        return False

    def _restart_stuck(self, now: float, reason: str) -> None:
        self.log(f"worker is {reason}; killing its group")
        self._kill_and_wait(now)
        self._exited(now, self._process.poll(), reason)

    def _kill_and_wait(self, now: float) -> None:
        self.seam.signal_group(self._process, signal.SIGKILL)
        deadline = now + 5.0
        while self._process.poll() is None and self.seam.now() < deadline:
            self.seam.sleep(0.02)

    def _exited(self, now: float, code: int | None, reason: str, permanent: bool = False) -> None:
        uptime = now - self.spawned_at
        self.seam.cleanup(self._process, self.handover.spare(self._process))
        self.last_exit = ExitInfo(code, reason, now)
        self._enter(State.EXITED, reason)
        self.handle = None
        self.running_since = None
        self.canary = None
        if self.stop_requested:
            # EXITED -> STOPPED: it died on its own while we were asked to stop anyway.
            self._enter(State.STOPPED)
            return
        decision = self.tracker.on_exit(uptime, self.ever_healthy)
        if permanent:
            decision = Decision(None, "the worker cannot start")
        if decision.delay is None:
            # EXITED -> FATAL: no more spawns until `mlxctl start`.
            self.fatal_reason = f"{decision.reason} (last: {reason})"
            self._enter(State.FATAL, self.fatal_reason)
        else:
            # EXITED -> BACKOFF: restart after the capped exponential delay.
            self.backoff_until = now + decision.delay
            self._enter(State.BACKOFF, f"restarting in {decision.delay:g}s")

    def _spawn(self) -> None:
        self.spec = self.make_spec()
        self.handle = self.seam.spawn(self.spec)
        self.spawned_at = self.seam.now()
        self.running_since = None
        # STOPPED/BACKOFF/FATAL -> STARTING.
        self._enter(State.STARTING)
