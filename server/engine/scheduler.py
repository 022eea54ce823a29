"""Continuous batching on mlx-lm's BatchGenerator (generation thread only).

Running sequences decode together in the BatchGenerator. New prompts prefill outside it, on their
own prefix-cache state as when alone (`prefill_task.PrefillTask`), one chunk between two decode
steps, taking turns (on the CPU backend, chunks of several prompts at once, a core each:
`prefill_streams`); each stores its checkpoints as it reaches them and then joins the batch with
its last prompt token.
"""

from __future__ import annotations

import collections
import logging
import time

from server.engine import membership
from server.engine.admission import on_device, waits_for_shared_prefill
from server.engine.decode_meter import DecodeMeter
from server.engine.job import Generation, Job, JobQueue, Outbox
from server.engine.joining import start_decoding
from server.engine.member import Member
from server.engine.prefill_streams import PrefillStreams, streams_for
from server.engine.prefill_task import PrefillTask, store_held
from server.engine.runner import Runner
from server.engine.sequential import run_alone
from server.engine.solo_decode import SOLO_UID
from server.engine.turns import DECODE, PREFILL, TimeSlices
from server.request import Progress, Started

log = logging.getLogger("server.engine")


class Scheduler:
    """Admits queued jobs, prefills them between decode steps, decodes them in one batch."""

    drafts = True  # a lone sequence may draft (server.speculative)
    prefill_streams = True  # prompts may prefill on streams of their own (the CPU backend)

    def __init__(self, runner: Runner, queue: JobQueue):
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator, make_stop_sequences

        from server.model import batch_attention, verify_attention

        self.runner, self.queue = runner, queue
        settings = runner.settings
        model = runner.loaded.model
        self.step_size = settings.prefill_step_size or 2048
        self.admission = on_device(runner, self._held_kv)
        self.gen = BatchGenerator(
            model,
            completion_batch_size=settings.decode_concurrency,
            prefill_batch_size=settings.decode_concurrency,  # joins only: prompts prefill here
        )
        if not mx.metal.is_available():  # Metal's fused decode attention takes the mask itself
            verify_attention.install(model)  # and Metal builds no graph per verify's shape
            batch_attention.install(model)
        self.stop_sequences = make_stop_sequences(runner.loaded.tokenizer)
        self.active: dict[int, Member] = {}
        self.prefills: collections.deque[PrefillTask] = collections.deque()
        self.waiting: collections.deque[Job] = collections.deque()
        self.outbox = Outbox()  # members' events, delivered once per loop iteration
        self.meter = DecodeMeter()
        self.turns = TimeSlices(slice_s=settings.turn_seconds)  # decode and prefill take turns
        self._held: list[PrefillTask] = []  # end states to store once due (or a prompt comes)
        streams = streams_for(settings.prefill_streams, runner.loaded.backend)
        self.streams = PrefillStreams(streams if self.prefill_streams else 1)
        limit, source = self.admission.limit
        log.info(
            "scheduler: batched (decode %d, prefill %d at once, %d streams; KV %d B/token; %s)",
            settings.decode_concurrency,
            settings.prompt_concurrency,
            self.streams.count,
            self.admission.kv_per_token,
            f"KV budget {settings.kv_budget_bytes / 1e9:.2f} GB"
            if settings.kv_budget_bytes
            else f"memory planned on {limit / 1e9:.1f} GB ({source})",
        )

    def _fits(self, job: Job, estimate: int) -> bool:
        """Whether `job` may start now (server.engine.lockstep asks every rank)."""
        return self.admission.fits(job, estimate, self._held_kv(), len(self.prefills))

    def _held_kv(self) -> list[tuple[int, int]]:
        """(KV estimate, KV bytes held now) of each running sequence and prefill."""
        per_token = self.admission.kv_per_token
        held = [(s.estimate, s.held_kv(per_token)) for s in self.active.values()]
        return held + [(t.estimate, per_token * t.pos) for t in self.prefills]

    # -- status (read from any thread: plain Python values) -----------------------------------

    def status(self) -> dict:
        members = list(self.active.values())
        prefills = list(self.prefills)
        return {
            "mode": "batched",
            "running": len(members) + len(prefills),
            "waiting": sum(1 for j in list(self.waiting) if not j.cancelled),
            "batch_size": len(members),
            "decoding_alone": SOLO_UID in self.active,
            "turn_seconds": self.turns.slice_s,
            "prefilling": len(prefills),
            **self.streams.status(),
            **self.meter.status(),
            "kv_bytes_estimate": sum(s.estimate for s in members + prefills),
            "memory": self.admission.status(),
            "speculative": self.runner.draft_status(),
        }

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Until the queue closes and the last member finishes."""
        closed = False
        while not closed or self.active or self.prefills or self.waiting:
            closed = self._take_jobs(closed)
            self._reap_cancelled()
            self._admit()
            self.outbox.flush()  # a started stream's message_start goes out before its prefill
            if self.active or self.prefills:
                try:
                    self._step()
                except Exception:  # a failed step must not take the worker down
                    log.exception("batch step failed; failing its %d requests", self._busy())
                    self._fail_all()
            elif self.waiting:
                time.sleep(0.01)  # deferred jobs only: their blocker just left, retry
            if closed and not self.active and not self.prefills:
                for job in self.waiting:
                    job.cancel("the server is shutting down")
                self._reap_cancelled()
            self.outbox.flush()
        self.gen.close()

    def _take_jobs(self, closed: bool) -> bool:
        """Move queued jobs into `waiting`, blocking only when there is nothing else to do;
        returns whether the queue has closed (server.engine.lockstep replays rank 0's instead)."""
        queue, idle = self.queue, not self._busy()
        while not closed:
            job = queue.get(timeout=None if idle and not self.waiting else 0)
            if job is None:
                return queue.closed
            self.waiting.append(job)
            idle = False
        return closed

    def in_flight(self) -> list[Job]:
        """Every job prefilling or decoding (safe from any thread)."""
        return [s.job for s in list(self.active.values())] + [t.job for t in list(self.prefills)]

    def _busy(self) -> int:
        return len(self.active) + len(self.prefills)

    def _admit(self) -> None:
        """FIFO: each waiting job starts prefilling unless it waits on a shared prefill (it then
        lets later ones pass), or memory, the batch or the prefill slots are full, or others
        decode and it has not waited its turn (then the queue waits behind it)."""
        runner = self.runner
        for job in list(self.waiting):
            if job.cancelled:
                self.waiting.remove(job)
                runner.finish_cancelled(job, _usage(job), 0.0)
                job.done = True
                continue
            if job.request.sampling.seed is not None:
                # A seed sets MLX's global generator: one at a time, after the batch drains.
                if self._busy():
                    return
                self.waiting.remove(job)
                log.info("request %s runs alone (a seed cannot batch)", job.request.request_id)
                run_alone(runner, job)
                continue
            if waits_for_shared_prefill(job, self.prefills):
                continue
            max_tokens = runner.decode_limit(job)
            estimate = self.admission.estimate(len(job.rendered.tokens), max_tokens)
            if not self._fits(job, estimate):
                return
            job.waits_for_memory = False
            self.waiting.remove(job)
            self._start(job, max_tokens, estimate)

    def _start(self, job: Job, max_tokens: int, estimate: int) -> None:
        runner = self.runner
        job.admitted = time.perf_counter()
        job.outbox = self.outbox
        self._held = store_held(runner, self._held, self._held)  # its lookup sees them all
        runner.attach_processors(job)
        task = PrefillTask.start(runner, job, max_tokens, estimate)
        usage = _usage(job, task.n_cached)
        job.emit(Started(usage.prompt_tokens, usage.cached_tokens))
        if not self._busy():
            runner.watchdog.begin("a batch of requests")
        self.prefills.append(task)

    def _step(self) -> None:
        """One decode step of the batch, or one chunk of the next prompt in turn."""
        turn = self._turn()
        if turn == DECODE:
            self._decode()
        elif turn == PREFILL:
            if len(together := self.streams.pick(self.prefills)) > 1:
                self._prefill_together(together)
            else:
                self._prefill_chunk(self.prefills[0])
        if ready := [t for t in self._held if t.end_due(time.perf_counter())]:
            self.outbox.flush()  # the tokens go out before the copies of the end states
            self._held = store_held(self.runner, self._held, ready)

    def _turn(self) -> str | None:
        """Whose turn it is (it depends on time: server.engine.lockstep shares rank 0's)."""
        return self.turns.next(bool(self.active), bool(self.prefills))

    def _chunk(self) -> int:
        # Smaller chunks while replies wait: the turn ends closer to its slice.
        return max(128, self.step_size // 4) if self.active else self.step_size

    def _prefill_chunk(self, task: PrefillTask) -> None:
        if not task.done:  # an all-cached prompt joins at once
            task.advance(self.runner, self._chunk())
            self.runner.watchdog.beat()
        self._chunk_done(task)

    def _prefill_together(self, tasks: list[PrefillTask]) -> None:
        """A chunk of each of `tasks` at once, a stream each (server.engine.prefill_streams)."""
        self.streams.advance(self.runner, tasks, self._chunk())
        self.runner.watchdog.beat()
        for task in tasks:
            self._chunk_done(task)

    def _chunk_done(self, task: PrefillTask) -> None:
        """A prefilled prompt joins the batch; one still prefilling goes to the back of the turn."""
        if task.done:
            if task.end_later:  # now if a prompt waits for it, else once due
                waited = any(job.waits_on == id(task) for job in self.waiting)
                if not task.keep_end(self.runner, now=waited):
                    self._held.append(task)
            self._join(task)
            self.prefills.remove(task)  # after joining: it counts as busy throughout
        else:
            self.prefills.remove(task)
            self.prefills.append(task)  # to the back of the turn
            task.job.emit(Progress(task.pos, len(task.job.rendered.tokens)))

    def _join(self, task: PrefillTask) -> None:
        """The prefilled prompt decodes alone when nothing else does; otherwise it joins the batch
        with its last token (mlx-lm merges its cache), a sequence decoding alone first."""
        lone = membership.lone(self.active)
        if lone is not None and membership.into_batch(self.gen, self.active, *lone):
            self._end(lone[0])  # it ended on the token it had sampled ahead
        seq = start_decoding(self.runner, self.gen, task, self.stop_sequences,
                             alone=not self.active, drafts=self.drafts)  # fmt: skip
        self.active[seq.uid] = seq

    def _decode(self) -> None:
        """One decode step of the batch (or of the lone sequence), then each member's token."""
        started = time.perf_counter()
        waiting = bool(self.prefills or self.waiting)
        responses, sequences = membership.decode_step(self.gen, self.active, waiting)
        self.meter.step(len(responses), time.perf_counter() - started, sequences)  # not replies
        self.runner.watchdog.beat()
        for r in responses:
            seq = self.active.get(r.uid)
            if seq is not None and membership.deliver(self.gen, seq, r):
                self._end(seq)

    def _end(self, seq: Member) -> None:
        """Finish a member's ended reply (its KV state already where the end store needs it)."""
        job, run = seq.job, seq.run
        self.runner.finish(job, run, seq.parser, _usage(job, run.n_cached))
        self._release(job, seq.uid)  # done only once stored: the next may count on it

    def _reap_cancelled(self) -> None:
        """Remove cancelled members at once; a prefill cut short keeps its state for a retry."""
        for task in [t for t in self.prefills if t.job.cancelled]:
            self.prefills.remove(task)
            if kept := task.keep_partial(self.runner):
                log.info("prefill cancelled; kept its KV state (%d tokens) for a retry", kept)
            self._cancelled(task.job, task.run)
        for seq in [s for s in self.active.values() if s.job.cancelled]:
            # Its prompt's state is stored as a finished reply's is.
            membership.take_back(self.gen, seq)
            self.active.pop(seq.uid, None)
            self._cancelled(seq.job, seq.run)
        if ended := [t for t in self._held if t.job.done]:  # now, not at the next step
            self._held = store_held(self.runner, self._held, ended)

    def _cancelled(self, job: Job, run: Generation) -> None:
        usage = _usage(job, run.n_cached)
        usage.completion_tokens = len(run.generated)
        self.runner.finish_cancelled(job, usage, time.perf_counter() - run.started, run)
        self._release(job)

    def _fail_all(self) -> None:
        from server.errors import InternalError
        from server.request import Failed

        jobs = [s.job for s in self.active.values()] + [t.job for t in self.prefills]
        uids = membership.disband(self.active)
        self.prefills.clear()
        self._held.clear()
        for job in jobs:
            job.emit(Failed(InternalError()))
            self._release(job)
        self.gen.remove(uids)
        self.runner.settle()

    def _release(self, job: Job, uid: int | None = None) -> None:
        if uid is not None:
            self.active.pop(uid, None)
        job.done = True
        if not self._busy():
            self.runner.watchdog.end()
            self.runner.snapshot_memory()


def _usage(job: Job, n_cached: int = 0):
    from server.request import Usage

    # A resumed reply's tokens prefill with its prompt but are no prompt tokens.
    prompt = job.rendered.prompt_tokens
    return Usage(prompt_tokens=prompt, cached_tokens=min(n_cached, prompt))
