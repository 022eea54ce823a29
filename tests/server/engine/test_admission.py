"""Admission's memory plan, on fake device figures: what fits, what makes room, what waits."""

from __future__ import annotations

from types import SimpleNamespace

from server.engine.admission import Admission, Relief
from server.model.memory import HEADROOM, DeviceMemory

GB = 10**9


class FakeDevice:
    def __init__(self, limit: int, active: int, pool: int = 0):
        self.limit, self.active, self.pool = limit, active, pool

    def __call__(self) -> DeviceMemory:
        return DeviceMemory(self.limit, "total_memory", self.active, self.pool)

    def release_pool(self) -> int:
        freed, self.pool = self.pool, 0
        return freed


def job() -> SimpleNamespace:
    return SimpleNamespace(waits_for_memory=False, request=SimpleNamespace(request_id="r1"))


def admission(device: FakeDevice, **kwargs) -> Admission:
    return Admission(
        kv_per_token=1000,
        decode_concurrency=8,
        prompt_concurrency=4,
        memory=device,
        **kwargs,
    )


def plannable(device: FakeDevice) -> int:
    return int(device.limit * (1 - HEADROOM)) - device.active - device.pool


def test_a_job_fits_in_what_the_device_has_less_what_running_sequences_may_still_grow():
    device = FakeDevice(limit=100 * GB, active=60 * GB)
    running = [(10 * GB, 4 * GB)]  # may grow by 6 GB more
    free = plannable(device) - 6 * GB
    assert admission(device).fits(job(), free, running, prefilling=0)
    assert not admission(device).fits(job(), free + 1, running, prefilling=0)


def test_the_prefix_caches_growth_is_planned_for_too():
    device = FakeDevice(limit=100 * GB, active=60 * GB)
    free = plannable(device)
    plan = admission(device, cache_growth=lambda: 5 * GB)
    assert plan.fits(job(), free - 5 * GB, [(1, 1)], prefilling=0)
    assert not plan.fits(job(), free - 5 * GB + 1, [(1, 1)], prefilling=0)


def test_a_job_that_does_not_fit_makes_room_before_it_waits():
    device = FakeDevice(limit=100 * GB, active=60 * GB, pool=20 * GB)
    plan = admission(device, reliefs=[Relief("the pool", device.release_pool, every_s=1.0)])
    waiting = job()
    assert plan.fits(waiting, 20 * GB, [(1, 1)], prefilling=0)  # only once the pool is given back
    assert device.pool == 0 and not waiting.waits_for_memory and plan.waited == 0


def test_a_job_waits_when_nothing_makes_room_and_is_counted_once():
    device = FakeDevice(limit=100 * GB, active=89 * GB)  # 1 GB plannable
    calls = []
    plan = admission(device, reliefs=[Relief("shed", lambda: calls.append(1) or 0, every_s=30.0)])
    waiting = job()
    assert not plan.fits(waiting, GB + 1, [(1, 1)], prefilling=0)
    assert not plan.fits(waiting, GB + 1, [(1, 1)], prefilling=0)
    assert waiting.waits_for_memory and plan.waited == 1
    assert calls == [1]  # a relief is tried at most once per its period
    assert plan.status()["free_bytes"] == plannable(device)


def test_alone_a_job_always_starts_after_making_what_room_it_can():
    device = FakeDevice(limit=100 * GB, active=95 * GB, pool=GB)
    plan = admission(device, reliefs=[Relief("the pool", device.release_pool, every_s=1.0)])
    assert plan.fits(job(), 50 * GB, [], prefilling=0)


def test_the_users_kv_budget_replaces_the_plan():
    device = FakeDevice(limit=100 * GB, active=99 * GB)  # the plan would refuse everything
    plan = admission(device, kv_budget=10 * GB)
    assert plan.fits(job(), 4 * GB, [(6 * GB, GB)], prefilling=0)
    assert not plan.fits(job(), 4 * GB + 1, [(6 * GB, GB)], prefilling=0)


def test_slots_bound_the_batch_and_the_prefills():
    device = FakeDevice(limit=100 * GB, active=0)
    plan = admission(device)
    assert not plan.fits(job(), 1, [(1, 1)] * 8, prefilling=0)
    assert not plan.fits(job(), 1, [(1, 1)] * 4, prefilling=4)
    assert plan.fits(job(), 1, [(1, 1)] * 4, prefilling=3)
