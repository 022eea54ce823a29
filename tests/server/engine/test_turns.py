"""Decode and prefill take turns of at most a slice while both have work (a fake clock)."""

from __future__ import annotations

from server.engine.turns import DECODE, PREFILL, TimeSlices


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_side_runs_alone_when_the_other_has_no_work():
    clock = Clock()
    turns = TimeSlices(clock, slice_s=1.0)
    assert turns.next(decoding=False, prefilling=False) is None
    for _ in range(3):
        clock.now += 5
        assert turns.next(decoding=True, prefilling=False) == DECODE
    for _ in range(3):
        clock.now += 5
        assert turns.next(decoding=False, prefilling=True) == PREFILL


def test_while_both_wait_the_turn_passes_at_the_end_of_each_slice():
    clock = Clock()
    turns = TimeSlices(clock, slice_s=1.0)
    assert turns.next(decoding=True, prefilling=False) == DECODE
    seen = []  # a prompt arrives 0.5 s into the decode turn: it waits for the slice
    for i in range(4, 28):  # steps of 1/8 s (exact in binary)
        clock.now = 100 + i / 8
        seen.append((clock.now - 100, turns.next(decoding=True, prefilling=True)))
    changes = [t for (t, turn), (_, prev) in zip(seen[1:], seen[:-1], strict=True) if turn != prev]
    assert seen[0][1] == DECODE
    assert changes == [1.0, 2.0, 3.0]  # each side at most one slice while the other waits
    decode_share = sum(1 for _, turn in seen if turn == DECODE) / len(seen)
    assert 0.4 <= decode_share <= 0.6


def test_a_side_left_without_work_hands_over_at_once_and_a_long_turn_yields_to_newcomers():
    clock = Clock()
    turns = TimeSlices(clock, slice_s=1.0)
    assert turns.next(decoding=True, prefilling=True) == DECODE
    clock.now += 0.25
    assert turns.next(decoding=False, prefilling=True) == PREFILL  # the replies ended early
    clock.now += 0.25
    assert turns.next(decoding=True, prefilling=True) == PREFILL  # a joiner waits the slice out
    clock.now += 0.75
    assert turns.next(decoding=True, prefilling=True) == DECODE
    clock.now += 7.0  # decoding alone for long: a new prompt gets its turn at once
    assert turns.next(decoding=True, prefilling=False) == DECODE
    assert turns.next(decoding=True, prefilling=True) == PREFILL
