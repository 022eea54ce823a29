"""Unit tests: a switch's handover in the state machine, against the fake clock and processes."""

from __future__ import annotations

import signal

from mlxctl.supervisor.machine import Supervisor
from mlxctl.supervisor.states import State
from mlxctl.system.processes import WorkerSpec
from tests.mlxctl.test_supervisor_machine import POLICY, TIMING, FakeCanary, FakeSeam, run_for


class VettingSeam(FakeSeam):
    def __init__(self):
        super().__init__()
        self.vets: list[FakeCanary] = []
        self.spared: list[tuple[int, tuple[int, ...]]] = []

    def vet(self, spec: WorkerSpec, timeout: float) -> FakeCanary:
        self.vets.append(FakeCanary())
        return self.vets[-1]

    def cleanup(self, handle, spare: tuple[int, ...] = ()) -> None:
        super().cleanup(handle, spare)
        self.spared.append((handle.pid, spare))


def running(busy: set[str]):
    seam = VettingSeam()
    lines: list[str] = []
    verdicts: list[str] = []
    ports = iter(range(9000, 9100))

    def spec() -> WorkerSpec:
        return WorkerSpec(["worker"], {}, "nonce", f"http://127.0.0.1:{next(ports)}/health")

    sup = Supervisor(
        seam, spec, POLICY, TIMING, lines.append,
        busy=lambda url: url in busy, on_handover=verdicts.append,
    )  # fmt: skip
    sup.start()
    seam.current.health = 200
    sup.tick()
    assert sup.state is State.RUNNING
    return sup, seam, lines, verdicts, spec


def test_the_next_worker_takes_over_in_one_step_and_the_old_one_drains_then_stops():
    busy = {"http://127.0.0.1:9000"}  # the serving worker still answers a stream
    sup, seam, lines, verdicts, spec = running(busy)
    old = seam.current
    assert sup.request_handover("migrate", spec)
    assert not sup.request_handover("again", spec)  # one switch at a time
    new = seam.current
    run_for(sup, seam, 5)
    assert sup.handle is old and verdicts == []  # loading: the old one serves
    new.health = 200
    sup.tick()
    assert sup.handle is old and len(seam.vets) == 1  # healthy, now the smoke tests
    seam.vets[0].result = ""
    sup.tick()
    assert sup.handle is new and sup.state is State.RUNNING and verdicts == [""]
    assert sup.spec is not None and sup.spec.url.startswith("http://127.0.0.1:9001")
    run_for(sup, seam, 5)
    assert old.signals == []  # still busy: it finishes what it serves
    busy.clear()
    sup.tick()
    assert old.signals == [signal.SIGTERM]
    sup.tick()
    assert sup.retirees == [] and (old.pid, (new.pid,)) in seam.spared  # the new one is spared
    assert any("took over from pid" in line for line in lines)


def test_a_busy_old_worker_is_stopped_after_the_stop_grace():
    sup, seam, _, _, spec = running({"http://127.0.0.1:9000"})
    old = seam.current
    sup.request_handover("restart", spec)
    seam.current.health = 200
    sup.tick()
    seam.vets[0].result = ""
    sup.tick()
    run_for(sup, seam, TIMING.stop_timeout + 0.5)
    assert old.signals == [signal.SIGTERM]


def test_a_next_worker_that_fails_its_smoke_tests_goes_and_the_serving_one_carries_on():
    sup, seam, lines, verdicts, spec = running(set())
    old = seam.current
    sup.request_handover("migrate", spec)
    new = seam.current
    new.health = 200
    sup.tick()
    seam.vets[0].result = "chat: HTTP 500"
    sup.tick()
    assert sup.handle is old and sup.successor is None and new.signals == [signal.SIGKILL]
    assert verdicts == ["smoke tests failed: chat: HTTP 500"] and old.signals == []
    assert (new.pid, (old.pid,)) in seam.spared


def test_a_stop_during_a_switch_takes_down_every_worker_before_it_is_done():
    sup, seam, _, verdicts, spec = running({"http://127.0.0.1:9000"})
    sup.request_handover("restart", spec)
    sup.request_stop()
    sup.tick()
    assert sup.successor is None and verdicts and verdicts[0].startswith("the service went")
    run_for(sup, seam, 1)
    assert sup.state is State.STOPPED and sup.done


GIB = 1024**3


def test_two_copies_start_side_by_side_only_where_memory_holds_both():
    from mlxctl.supervisor.memory import MemoryLimits, room_for_another

    assert room_for_another(MemoryLimits(8 * GIB, 10 * GIB, used_bytes=4 * GIB), 5 * GIB)
    assert not room_for_another(MemoryLimits(8 * GIB, 10 * GIB, used_bytes=4 * GIB), 7 * GIB)
    # Weights unknown (a hub id): the next one may need as much as the serving one uses.
    assert not room_for_another(MemoryLimits(8 * GIB, 10 * GIB, used_bytes=6 * GIB), None)
    assert room_for_another(MemoryLimits(8 * GIB, 10 * GIB), None)  # not sampled yet


def test_without_memory_for_two_the_old_worker_stops_first_and_the_door_holds(monkeypatch):
    import argparse

    from mlxctl.supervisor import state as state_file
    from mlxctl.supervisor.memory import MemoryLimits
    from mlxctl.supervisor.switches import Switches, route_for

    sup, seam, lines, _, spec = running(set())

    class Owner:
        args = argparse.Namespace(model="/m/big", model_name="big", release="")
        settings = {"api_key": ""}
        memory = type("Guard", (), {"limits": MemoryLimits(8 * GIB, 10 * GIB, 9 * GIB)})()
        log = lines.append

        def make_spec(self, args=None):
            return spec()

    owner = Owner()
    switches = Switches(owner)
    request = {"id": "r1", "reason": "restart", "model": "/m/next", "model_name": "next"}
    monkeypatch.setattr(state_file, "take_switch_request", lambda: request)
    assert switches.take(sup)
    assert sup.successor is None and sup.state is State.STOPPING
    assert owner.args.model_name == "next"
    assert switches.verdict == {"id": "r1", "ok": None, "detail": "restart"}
    while sup.state is not State.STARTING:
        sup.tick()
        switches.changed(sup)
        assert route_for(sup).held or sup.state is State.RUNNING
        seam.clock += 0.1
    seam.current.health = 200
    sup.tick()
    switches.changed(sup)
    assert switches.verdict is not None and switches.verdict["ok"] is True
