"""Every rank runs the same batch scheduler in lockstep: at the top of each loop iteration rank 0
broadcasts what changed (new jobs with their tokens and sampling, cancellations, the queue's
close) and every rank replays it, so all make the same admissions, steps and removals.

On rank 0 the scheduler sees replicas of the HTTP side's jobs: a replica's events go to its
job's listener, but its cancellation only lands at a broadcast (a client can leave at any
moment; the ranks must all see it in the same iteration).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from server.engine.job import Job, JobQueue
from server.engine.runner import Runner
from server.engine.scheduler import Scheduler
from server.engine.turns import DECODE, PREFILL
from server.model.distributed import (
    collective_stream,
    gather_ints,
    gather_objects,
    rank_identity,
    share,
)

log = logging.getLogger("server.distributed")

# An idle group's cadence: a request arriving then waits at most ~0.8 of it for the others.
IDLE_TICK_S = 0.05


@dataclass
class LockstepJob(Job):
    """A job whose cancellation from another thread waits for the next broadcast."""

    ident: int = -1
    origin: Job | None = None  # rank 0: the HTTP side's job this replicates
    owner: threading.Thread | None = None  # the generation thread: it cancels at once
    pending: tuple[str | None] | None = field(default=None, repr=False)

    def cancel(self, reason: str | None = None) -> None:
        if threading.current_thread() is self.owner:
            super().cancel(reason)  # every rank makes the same call at the same point
        elif self.pending is None:
            self.pending = (reason,)

    def wanted_cancel(self) -> tuple[str | None] | None:
        """(reason,) when this job should be cancelled at the next broadcast (rank 0)."""
        if self.cancelled:
            return None
        if self.pending is not None:
            return self.pending
        if self.origin is not None and self.origin.cancelled:
            return (self.origin.abort_reason,)
        return None


class Lockstep:
    """Rank 0 takes jobs from the engine's queue and broadcasts each iteration's changes."""

    def __init__(self, group: Any, queue: Any):
        self.group = group
        self.rank = group.rank()
        self.queue = queue  # the engine's JobQueue (only rank 0's is fed)
        self.jobs: dict[int, LockstepJob] = {}
        self.next_ident = 0
        self._taken: dict[int, Job] = {}  # rank 0: broadcast jobs awaiting their replica
        self.closed = False  # rank 0 closed the queue: the group is stopping

    def exchange(self, block: bool) -> tuple[list[LockstepJob], bool]:
        """This iteration's new jobs (replicas, in rank 0's order) and whether the queue closed.
        With nothing running or waiting (`block`, the same on every rank) the group idles in
        ticks: rank 0 waits up to IDLE_TICK_S for a job, the others sleep most of that, since
        a rank waiting in a ring collective spins a core (mlx's socket threads poll)."""
        if self.rank == 0:
            message = self._changes(block)
        else:
            message = None
            if block:
                time.sleep(IDLE_TICK_S * 0.8)
        message = share(self.group, message)
        if message is None:
            return [], False
        for ident, reason in message["cancel"]:
            job = self.jobs.get(ident)
            if job is not None:
                Job.cancel(job, reason)
        new = [self._replica(*spec) for spec in message["jobs"]]
        self.jobs = {i: j for i, j in self.jobs.items() if not j.done}
        self.closed = self.closed or message["closed"]
        return new, message["closed"]

    def _changes(self, block: bool) -> dict | None:
        taken, closed = [], False
        job = self.queue.get(timeout=IDLE_TICK_S if block else 0)
        while job is not None:
            taken.append(job)
            job = self.queue.get(timeout=0)
        closed = self.queue.closed
        cancel = [(i, w[0]) for i, j in self.jobs.items() if (w := j.wanted_cancel())]
        if not taken and not cancel and not closed:
            return None
        self._taken = {self.next_ident + k: job for k, job in enumerate(taken)}
        specs = [(i, job.request, job.rendered) for i, job in self._taken.items()]
        self.next_ident += len(taken)
        return {"jobs": specs, "cancel": cancel, "closed": closed}

    def _replica(self, ident: int, request: Any, rendered: Any) -> LockstepJob:
        origin = self._taken.pop(ident) if self.rank == 0 else None
        job = LockstepJob(
            request=request,
            rendered=rendered,
            loop=origin.loop if origin else None,
            ident=ident,
            origin=origin,
            owner=threading.current_thread(),
        )
        if origin is not None:  # the HTTP handler reads the events of the job it submitted
            job.events, job.submitted = origin.events, origin.submitted
        self.jobs[ident] = job
        return job


class LockstepScheduler(Scheduler):
    """The batch scheduler, fed by rank 0's broadcasts; a job starts when it fits on every rank."""

    # Ranks must take the same steps: draft lengths chosen from each rank's own timings would not.
    drafts = False
    prefill_streams = False  # each rank's collectives run in one order: one stream

    def __init__(self, runner: Runner, queue: JobQueue, group: Any):
        import mlx.core as mx

        super().__init__(runner, queue)
        self.lockstep = Lockstep(group, queue)
        # Sampling draws from MLX's global generator: the same seed everywhere, as mlx_lm.server.
        self.ranks = gather_objects(group, rank_identity(group.rank()))  # /v1/status shows them
        state = mx.random.state[0]  # type: ignore[index]  # mlx types the state list as object
        seed = mx.distributed.all_sum(state, group=group, stream=collective_stream())
        mx.random.seed(cast(int, seed.view(mx.uint64).item()))  # mlx types item() widely

    def _turn(self):
        """Whose turn it is depends on time, which differs between ranks: rank 0's is everyone's."""
        if not (self.active and self.prefills):
            return super()._turn()  # one side has work: the same on every rank
        turns = (None, DECODE, PREFILL)
        mine = turns.index(super()._turn()) if self.lockstep.rank == 0 else 0
        return turns[gather_ints(self.lockstep.group, [mine])[0][0]]

    def _fits(self, job: Job, estimate: int) -> bool:
        """Each rank holds its own shard and cache: a job starts only where all have room. With
        nothing running it always starts, on every rank alike, so no exchange is needed."""
        mine = super()._fits(job, estimate)
        if not self._busy():
            return mine
        return all(answer[0] for answer in gather_ints(self.lockstep.group, [int(mine)]))

    def _take_jobs(self, closed: bool) -> bool:
        block = not self._busy() and not self.waiting and not closed
        # An idle exchange is watched too: a rank that wedges stalls it, and rank 0's /health
        # then says stuck, so the supervisor restarts the group even with nothing running.
        watchdog = self.runner.watchdog
        idle = watchdog.busy is None
        if idle:
            watchdog.begin("an exchange with the other ranks")
        try:
            jobs, now_closed = self.lockstep.exchange(block)
        finally:
            if idle:
                watchdog.end()
        self.waiting.extend(jobs)
        return closed or now_closed
