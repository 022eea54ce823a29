"""Unit tests: the state machine and restart policy against a fake clock and fake processes."""

from __future__ import annotations

import signal

import pytest

from mlxctl.supervisor.machine import Supervisor, Timing
from mlxctl.supervisor.policy import RestartPolicy, RestartTracker
from mlxctl.supervisor.states import ALLOWED, InvalidTransition, State, transition
from mlxctl.system.processes import WorkerSpec
from mlxctl.worker_client import Health


class FakeProcess:
    def __init__(self, pid: int):
        self.pid = pid
        self.nonce = f"n{pid}"
        self.create_time = 1.0
        self.code: int | None = None
        self.health: int | None = 503  # loading
        self.failed: str | None = None  # /health's reason when it cannot start
        self.stuck: str | None = None  # /health's watchdog reason
        self.signals: list[int] = []
        self.ignores_term = False

    def poll(self) -> int | None:
        return self.code


class FakeCanary:
    def __init__(self):
        self.result: str | None = None  # tests set "" (answered) or a failure

    def verdict(self) -> str | None:
        return self.result


class FakeSeam:
    """A fake clock plus fake processes; tests script exits and /health answers."""

    def __init__(self):
        self.clock = 1000.0
        self.procs: list[FakeProcess] = []
        self.cleaned: list[int] = []
        self.canaries: list[FakeCanary] = []

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def spawn(self, spec: WorkerSpec) -> FakeProcess:
        proc = FakeProcess(100 + len(self.procs))
        self.procs.append(proc)
        return proc

    def signal_group(self, handle: FakeProcess, sig: int) -> None:
        handle.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and not handle.ignores_term):
            handle.code = -sig if sig == signal.SIGKILL else 0

    def probe(self, url: str, timeout: float) -> Health | None:
        proc = self.procs[-1] if self.procs else None
        if proc is None or proc.health is None:
            return None
        return Health(proc.health, proc.failed, proc.stuck)

    def canary(self, spec: WorkerSpec, timeout: float) -> FakeCanary:
        self.canaries.append(FakeCanary())
        return self.canaries[-1]

    def cleanup(self, handle: FakeProcess, spare: tuple[int, ...] = ()) -> None:
        self.cleaned.append(handle.pid)

    @property
    def current(self) -> FakeProcess:
        return self.procs[-1]


POLICY = RestartPolicy(
    backoff_initial=1, backoff_factor=2, backoff_max=5, stable_after=60, max_fast_failures=4
)
TIMING = Timing(health_interval=1, liveness_timeout=5, startup_timeout=0, stop_timeout=10)


def make(policy=POLICY, timing=TIMING):
    seam = FakeSeam()
    lines: list[str] = []
    states: list[State] = []
    sup = Supervisor(
        seam,
        lambda: WorkerSpec(["worker"], {}, "nonce", "http://x/health"),
        policy,
        timing,
        log=lines.append,
        on_change=lambda s: states.append(s.state),
    )
    return sup, seam, lines, states


def run_for(sup: Supervisor, seam: FakeSeam, seconds: float, step: float = 0.1) -> None:
    end = seam.clock + seconds
    while seam.clock < end:
        sup.tick()
        seam.clock += step


def become_healthy(sup, seam):
    seam.current.health = 200
    sup.tick()
    assert sup.state is State.RUNNING


def crash(sup, seam, code=1):
    seam.current.code = code
    sup.tick()


def test_transition_table_rejects_impossible_changes():
    assert transition(State.STOPPED, State.STARTING) is State.STARTING
    with pytest.raises(InvalidTransition):
        transition(State.STOPPED, State.RUNNING)
    with pytest.raises(InvalidTransition):
        transition(State.RUNNING, State.STARTING)
    with pytest.raises(InvalidTransition):
        transition(State.STOPPING, State.RUNNING)
    # Every state can be left (no dead ends) and every state can be reached.
    assert all(ALLOWED[s] for s in State)
    assert set().union(*ALLOWED.values()) == set(State)


def test_starting_waits_for_health_then_runs_and_logs_transitions():
    sup, seam, lines, states = make()
    sup.start()
    run_for(sup, seam, 30)  # 503 for 30 s: loading, not a hang
    assert sup.state is State.STARTING
    become_healthy(sup, seam)
    assert states == [State.STARTING, State.RUNNING]
    assert lines[-1] == f"worker entered RUNNING (pid {seam.current.pid})"


def test_backoff_sequence_is_capped_exponential():
    sup, seam, _, _ = make(policy=RestartPolicy(1, 2, 5, 60, 10))
    sup.start()
    become_healthy(sup, seam)
    delays = []
    for _ in range(5):
        crash(sup, seam)
        assert sup.state is State.BACKOFF
        delays.append(sup.backoff_until - seam.clock)
        seam.clock = sup.backoff_until - 0.01
        sup.tick()
        assert sup.state is State.BACKOFF  # not a moment early
        seam.clock = sup.backoff_until
        sup.tick()
        assert sup.state is State.STARTING
        become_healthy(sup, seam)
    assert delays == [1, 2, 4, 5, 5]
    assert sup.restarts == 5


def test_stable_uptime_resets_the_backoff():
    sup, seam, _, _ = make()
    sup.start()
    become_healthy(sup, seam)
    for expected in (1, 2):
        crash(sup, seam)
        assert sup.backoff_until - seam.clock == expected
        seam.clock = sup.backoff_until
        sup.tick()
        become_healthy(sup, seam)
    seam.clock += 61  # a long healthy run
    crash(sup, seam)
    assert sup.backoff_until - seam.clock == 1


def test_repeated_fast_failures_end_in_fatal_and_start_resets():
    sup, seam, lines, _ = make()
    sup.start()
    become_healthy(sup, seam)
    for _ in range(POLICY.max_fast_failures):
        crash(sup, seam)
        assert sup.state is State.BACKOFF
        seam.clock = sup.backoff_until
        sup.tick()
        assert sup.state is State.STARTING
    spawned = len(seam.procs)
    crash(sup, seam)
    assert sup.state is State.FATAL
    assert "failed fast" in sup.fatal_reason
    assert sup.done
    run_for(sup, seam, 120)
    assert len(seam.procs) == spawned  # no more spawns
    sup.start()  # `mlxctl start` resets
    assert sup.state is State.STARTING
    assert sup.tracker.fast_failures == 0


def test_death_while_loading_is_retried_with_backoff_up_to_the_cap():
    sup, seam, _, _ = make()
    sup.start()
    crash(sup, seam, code=3)
    assert sup.state is State.BACKOFF  # was FATAL at once: one bad start killed the service
    assert sup.last_exit.code == 3 and "while loading" in sup.last_exit.reason
    for _ in range(POLICY.max_fast_failures):
        run_for(sup, seam, POLICY.backoff_max + 1)
        crash(sup, seam, code=3)
    assert sup.state is State.FATAL and len(seam.procs) == POLICY.max_fast_failures + 1


def test_liveness_kills_a_silent_running_worker_and_restarts():
    sup, seam, lines, _ = make()
    sup.start()
    become_healthy(sup, seam)
    worker = seam.current
    worker.health = None  # SIGSTOPped: no answer at all
    run_for(sup, seam, 4)
    assert sup.state is State.RUNNING  # not yet: liveness_timeout is 5 s
    run_for(sup, seam, 2)
    assert signal.SIGKILL in worker.signals
    assert sup.state in (State.BACKOFF, State.STARTING)
    assert "no /health answer" in sup.last_exit.reason
    assert worker.pid in seam.cleaned


def test_a_busy_answer_is_not_a_hang():
    sup, seam, _, _ = make()
    sup.start()
    become_healthy(sup, seam)
    seam.current.health = 503
    run_for(sup, seam, 30)
    assert sup.state is State.RUNNING


def test_stop_during_starting_sends_term_then_stops():
    sup, seam, _, states = make()
    sup.start()
    sup.request_stop()
    sup.tick()
    assert seam.current.signals == [signal.SIGTERM]
    run_for(sup, seam, 0.5)
    assert sup.state is State.STOPPED
    assert sup.done
    assert states == [State.STARTING, State.STOPPING, State.STOPPED]


def test_stop_during_backoff_cancels_the_restart():
    sup, seam, _, states = make()
    sup.start()
    become_healthy(sup, seam)
    crash(sup, seam)
    assert sup.state is State.BACKOFF
    sup.request_stop()
    run_for(sup, seam, 10)
    assert sup.state is State.STOPPED
    assert len(seam.procs) == 1
    assert states[-2:] == [State.BACKOFF, State.STOPPED]


def test_stop_escalates_to_sigkill_after_the_grace_period():
    sup, seam, lines, _ = make()
    sup.start()
    become_healthy(sup, seam)
    seam.current.ignores_term = True
    sup.request_stop(timeout=3)
    run_for(sup, seam, 2.5)
    assert sup.state is State.STOPPING
    run_for(sup, seam, 1)
    assert seam.current.signals == [signal.SIGTERM, signal.SIGKILL]
    assert sup.state is State.STOPPED
    assert any("sending SIGKILL" in line for line in lines)


def test_startup_timeout_counts_as_a_failure():
    sup, seam, _, _ = make(timing=Timing(1, 5, startup_timeout=10, stop_timeout=1))
    sup.start()
    run_for(sup, seam, 11)
    assert sup.state is State.BACKOFF  # retried like any failed start
    assert "not healthy after 10s" in sup.last_exit.reason


def test_tracker_alone():
    tracker = RestartTracker(RestartPolicy(0.5, 3, 10, 5, 2))
    assert tracker.on_exit(1).delay == 0.5
    assert tracker.on_exit(1).delay == 1.5
    assert tracker.on_exit(1).delay is None
    tracker.reset()
    assert tracker.on_exit(100).delay == 0.5


def test_a_worker_that_says_it_cannot_load_is_fatal_with_its_reason():
    sup, seam, lines, states = make()
    sup.start()
    run_for(sup, seam, 2)
    seam.current.failed = "model failed to load: ValueError: no such architecture"
    sup.tick()
    assert sup.state is State.FATAL
    assert "no such architecture" in sup.fatal_reason
    assert signal.SIGKILL in seam.procs[0].signals and len(seam.procs) == 1


def test_the_default_startup_timeout_grows_with_the_model_size(tmp_path):
    from mlxctl.supervisor.policy import auto_startup_timeout
    from mlxctl.supervisor.switches import weights_bytes

    (tmp_path / "model.safetensors").write_bytes(b"x" * 4096)
    assert weights_bytes(str(tmp_path)) == 4096
    assert weights_bytes("org/some-hub-id") is None
    small, large = auto_startup_timeout(1024**3), auto_startup_timeout(40 * 1024**3)
    assert 0 < small < large < auto_startup_timeout(None) * 2
    assert large >= 20 * 60  # a 40 GiB model gets at least 20 minutes


def test_a_stuck_worker_is_killed_and_restarted_under_backoff():
    sup, seam, lines, _ = make()
    sup.start()
    become_healthy(sup, seam)
    seam.current.health, seam.current.stuck = 503, "generation made no progress for 9s"
    run_for(sup, seam, 1.5)
    assert (
        sup.state is State.BACKOFF and "stuck: generation made no progress" in sup.last_exit.reason
    )
    assert seam.procs[0].signals == [signal.SIGKILL]
    run_for(sup, seam, POLICY.backoff_initial + 0.5)
    assert sup.state is State.STARTING and len(seam.procs) == 2


def test_the_canary_runs_when_due_and_its_failure_restarts_the_worker():
    timing = Timing(health_interval=1, liveness_timeout=5, canary_interval=30, canary_timeout=5)
    sup, seam, _, _ = make(timing=timing)
    sup.start()
    become_healthy(sup, seam)
    run_for(sup, seam, 29)
    assert seam.canaries == []  # not due yet
    run_for(sup, seam, 2)
    assert len(seam.canaries) == 1
    seam.canaries[0].result = ""  # answered: the next one waits a full interval
    run_for(sup, seam, 20)
    assert len(seam.canaries) == 1 and sup.state is State.RUNNING
    run_for(sup, seam, 11)
    seam.canaries[1].result = "no reply within 5s"
    sup.tick()
    assert (
        sup.state is State.BACKOFF and sup.last_exit.reason == "canary failed: no reply within 5s"
    )


def test_a_requested_restart_is_graceful_and_goes_through_the_policy():
    sup, seam, _, _ = make()
    sup.start()
    become_healthy(sup, seam)
    sup.request_restart("memory past the hard limit")
    assert sup.state is State.STOPPING and seam.procs[0].signals == [signal.SIGTERM]
    sup.tick()
    assert sup.state is State.BACKOFF and sup.last_exit.reason == "memory past the hard limit"
    run_for(sup, seam, POLICY.backoff_initial + 0.5)
    assert sup.state is State.STARTING and len(seam.procs) == 2
