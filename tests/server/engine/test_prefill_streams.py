"""How many prompts prefill at once, and which (fakes for the tasks: logic only)."""

from __future__ import annotations

from types import SimpleNamespace

from server.engine.prefill_streams import MAX_AUTO, PrefillStreams, streams_for


def test_the_users_setting_wins_over_the_cores_and_the_backend():
    assert streams_for(3, "cpu", cores=16) == 3
    assert streams_for(2, "cuda", cores=16) == 2


def test_the_cpu_backend_takes_a_stream_per_core_up_to_a_cap_and_a_gpu_one():
    assert streams_for(None, "cpu", cores=1) == 1
    assert streams_for(None, "cpu", cores=2) == 2
    assert streams_for(None, "cpu", cores=64) == MAX_AUTO
    assert streams_for(None, "metal", cores=16) == 1
    assert streams_for(None, "cuda", cores=16) == 1


def task(name: str, done: bool = False):
    return SimpleNamespace(name=name, done=done)


def names(chosen) -> list[str]:
    return [t.name for t in chosen]


def test_the_first_in_turn_and_those_right_behind_it_prefill_one_per_stream():
    streams = PrefillStreams(2)
    tasks = [task("a"), task("b"), task("c")]
    assert names(streams.pick(tasks)) == ["a", "b"]
    assert names(PrefillStreams(4).pick(tasks)) == ["a", "b", "c"]
    assert names(PrefillStreams(1).pick(tasks)) == ["a"]


def test_a_prompt_already_prefilled_goes_the_plain_way_and_ends_the_run_behind_it():
    streams = PrefillStreams(4)
    assert streams.pick([task("a", done=True), task("b")]) == []  # it joins at once, alone
    assert names(streams.pick([task("a"), task("b", done=True), task("c")])) == ["a"]
