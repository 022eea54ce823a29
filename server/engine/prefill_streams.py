"""Prefill chunks of several prompts at once, each on its own stream (generation thread only).

MLX's CPU backend runs a stream's ops one after another on one thread: a prompt's prefill uses one
core however many the host has. Prompts waiting to prefill together (sessions that start at once,
their screenshot turns) each take a stream of their own, so as many cores as streams work at once.
Each chunk runs the same ops on its own cache as alone: the states are the same, bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from server.engine.prefill_task import PrefillTask
from server.engine.runner import Runner

MAX_AUTO = 4  # at most this many streams unless the user asks for more (memory: a chunk each)


def streams_for(setting: int | None, backend: str, cores: int | None = None) -> int:
    """How many prompts prefill at once: the user's `--prefill-streams`, else one per core on the
    CPU backend (at most MAX_AUTO) and one on a GPU (its one queue already runs every core)."""
    if setting is not None:
        return setting
    if backend != "cpu":
        return 1
    return max(1, min(MAX_AUTO, cores if cores is not None else available_cores()))


def available_cores() -> int:
    """The cores this process may run on (its affinity, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        return os.cpu_count() or 1


class PrefillStreams:
    """The streams chunks run on together; made on first use, on the generation thread (MLX's
    streams belong to the thread that made them)."""

    def __init__(self, count: int):
        self.count = count
        self.together = 0  # chunks that ran beside another, for /v1/status
        self._streams: list[Any] = []

    def streams(self) -> list[Any]:
        if not self._streams:
            import mlx.core as mx
            from mlx_lm.generate import generation_stream

            extra = [mx.new_stream(generation_stream.device) for _ in range(self.count - 1)]
            self._streams = [generation_stream, *extra]
        return self._streams

    def pick(self, tasks: Sequence[PrefillTask]) -> list[PrefillTask]:
        """The prompts to prefill now: the first in turn and those right behind it still to
        prefill, one per stream (one alone: the plain path)."""
        chosen: list[PrefillTask] = []
        for task in list(tasks)[: self.count]:
            if task.done:
                break
            chosen.append(task)
        return chosen

    def advance(self, runner: Runner, tasks: list[PrefillTask], step: int) -> None:
        """One chunk of at most `step` tokens of each task, evaluated at once, each on its own
        stream; then each stores the checkpoint it reached, as alone."""
        import mlx.core as mx

        ends = []
        for task, stream in zip(tasks, self.streams(), strict=False):
            with mx.stream(stream):
                ends.append(task.queue(runner, step))
        mx.eval([c.state for task in tasks for c in task.cache])
        mx.clear_cache()
        self.together += len(tasks)
        for task, end in zip(tasks, ends, strict=True):
            task.reached(runner, end)

    def status(self) -> dict:
        return {"prefill_streams": self.count, "chunks_prefilled_together": self.together}
