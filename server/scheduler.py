"""Continuous batching on mlx-lm's BatchGenerator (generation thread only).

Running sequences decode together; new ones prefill in chunks between decode steps, each from
its own prefix-cache state. The prompt is inserted as segments that end at its checkpoints
(system+tools end, prompt end), so each state is stored exactly when its segment completes.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from server.job import Job
from server.reply_parser import ReplyParser
from server.request import Progress, Started

log = logging.getLogger("server.engine")

MIN_SHARED = 64  # a shared uncached prefix shorter than this is cheaper to prefill twice
DECODE_CONCURRENCY = 32  # mlx_lm.server's --decode-concurrency default
PROMPT_CONCURRENCY = 8  # its --prompt-concurrency default
RATE_WINDOW_S = 5.0


def cannot_batch(model: Any) -> str | None:
    """Why this model's caches cannot be merged into a batch (None: they can)."""
    from mlx_lm.models.cache import make_prompt_cache

    kinds = {type(c).__name__ for c in make_prompt_cache(model) if not hasattr(c, "merge")}
    return f"cache kinds {sorted(kinds)} cannot batch" if kinds else None


def kv_bytes_per_token(model: Any) -> int:
    """A simple upper estimate of one token's KV bytes: 2 (K, V) x layers x kv heads x head dim
    x the weights' item size; hybrid and sliding-window layers hold less, so it overestimates."""
    try:
        args = model.args
        heads = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
        head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
        itemsize = next(iter(_leaves(model.parameters()))).dtype.size
        return 2 * len(model.layers) * heads * head_dim * max(itemsize, 2)
    except Exception:  # unknown shape: no memory gating beyond the batch size
        return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list | tuple):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


@dataclass
class _Seq:
    """One request inside the BatchGenerator."""

    job: Job
    uid: int
    run: Any  # engine._Generation
    parser: ReplyParser
    detokenizer: Any
    boundaries: list[int]  # checkpoint positions still to reach, in order
    end: int  # prompt length but its last token
    estimate: int  # admitted KV bytes
    stored: set[int] = field(default_factory=set)

    @property
    def prefilling(self) -> bool:
        return self.run.first_token_at is None


class Scheduler:
    """Admits queued jobs into one BatchGenerator, steps it, streams each member's events."""

    def __init__(self, engine: Any, *, memory_budget: int | None = None):
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator, make_stop_sequences

        self.engine = engine
        model = engine.loaded.model
        self.step_size = engine.prefill_step_size or 2048
        self.gen = BatchGenerator(
            model,
            completion_batch_size=DECODE_CONCURRENCY,
            prefill_batch_size=PROMPT_CONCURRENCY,
            prefill_step_size=self.step_size,
        )
        self.stop_sequences = make_stop_sequences(engine.loaded.tokenizer)
        self.kv_per_token = kv_bytes_per_token(model)
        self.budget = memory_budget if memory_budget is not None else _memory_budget(engine, mx)
        self.active: dict[int, _Seq] = {}
        self.waiting: collections.deque[Job] = collections.deque()
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self.peak_batch = 0  # the most sequences decoded in one step since start
        log.info(
            "scheduler: batched (decode %d, prefill %d at once; KV estimate %d B/token, "
            "budget %.1f GB)",
            DECODE_CONCURRENCY,
            PROMPT_CONCURRENCY,
            self.kv_per_token,
            self.budget / 1e9,
        )

    # -- status (read from any thread: plain Python values) -----------------------------------

    def status(self) -> dict:
        now = time.monotonic()
        recent = [n for t, n in list(self._rate) if now - t <= RATE_WINDOW_S]
        return {
            "mode": "batched",
            "running": len(self.active),
            "waiting": sum(1 for j in list(self.waiting) if not j.cancelled),
            "batch_size": sum(1 for s in list(self.active.values()) if not s.prefilling),
            "prefilling": sum(1 for s in list(self.active.values()) if s.prefilling),
            "peak_batch_size": self.peak_batch,
            "tokens_per_second": round(sum(recent) / RATE_WINDOW_S, 1),
            "kv_bytes_estimate": sum(s.estimate for s in list(self.active.values())),
            "kv_budget_bytes": self.budget,
        }

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Until the queue closes and the last member finishes."""
        closed = False
        while not closed or self.active or self.waiting:
            closed = self._take_jobs(closed)
            self._reap_cancelled()
            self._admit()
            if self.active:
                try:
                    self._step()
                except Exception:  # a failed step must not take the worker down
                    log.exception("batch step failed; failing its %d requests", len(self.active))
                    self._fail_all()
            elif self.waiting:
                time.sleep(0.01)  # deferred jobs only: their blocker just left, retry
            if closed and not self.active:
                for job in self.waiting:
                    job.cancel("the server is shutting down")
                self._reap_cancelled()
        self.gen.close()

    def _take_jobs(self, closed: bool) -> bool:
        """Move queued jobs into `waiting`, blocking only when there is nothing else to do;
        returns whether the queue has closed (server.lockstep replays rank 0's instead)."""
        queue, idle = self.engine._queue, not self.active
        while not closed:
            job = queue.get(timeout=None if idle and not self.waiting else 0)
            if job is None:
                return queue.closed
            self.waiting.append(job)
            idle = False
        return closed

    def _admit(self) -> None:
        """FIFO: each waiting job joins unless it waits on a shared prefill (it then lets later
        ones pass) or memory is short (then the queue waits behind it)."""
        engine = self.engine
        for job in list(self.waiting):
            if job.cancelled:
                self.waiting.remove(job)
                engine._finish_cancelled(job, _usage(job), 0.0)
                job.done = True
                continue
            if job.request.sampling.seed is not None:
                # A seed sets MLX's global generator: one at a time, after the batch drains.
                if self.active:
                    return
                self.waiting.remove(job)
                log.info("request %s runs alone (a seed cannot batch)", job.request.request_id)
                engine._run_alone(job)
                continue
            if self._blocked_by_shared_prefill(job):
                continue
            tokens = job.rendered.tokens
            max_tokens = engine._max_tokens(job.request, len(tokens))
            estimate = self.kv_per_token * (len(tokens) + max_tokens)
            in_use = sum(s.estimate for s in self.active.values())
            if self.active and (
                in_use + estimate > self.budget or len(self.active) >= DECODE_CONCURRENCY
            ):
                return
            self.waiting.remove(job)
            self._insert(job, max_tokens, estimate)

    def _blocked_by_shared_prefill(self, job: Job) -> bool:
        """Whether a member still prefills a long prefix this job shares: the job then waits
        for that member's checkpoint instead of computing the same state again."""
        tokens = job.rendered.tokens
        for seq in self.active.values():
            if not seq.prefilling:
                continue
            shared = _common_prefix(tokens, seq.job.rendered.tokens)
            if shared < MIN_SHARED or shared <= seq.run.n_cached:
                continue
            # The member's checkpoints at or below `shared` that the job could start from.
            useful = [b for b in (seq.job.rendered.system_len, seq.end) if b <= shared]
            if seq.end <= shared or not useful:
                useful = [seq.end]  # a trimmable state, or an identical retry
            if not all(b in seq.stored for b in useful if b > seq.run.n_cached):
                if job.waits_on != seq.uid:
                    job.waits_on = seq.uid
                    log.info(
                        "request %s waits for the prefill of %s (%d shared tokens)",
                        job.request.request_id,
                        seq.job.request.request_id,
                        shared,
                    )
                return True
        return False

    def _insert(self, job: Job, max_tokens: int, estimate: int) -> None:
        from server.prefill import checkpoints, sampler_for
        from server.sequential import Generation

        engine, tokens = self.engine, job.rendered.tokens
        job.admitted = time.perf_counter()
        prompt_cache, n_cached = engine._cache_for(tokens)
        end = len(tokens) - 1
        boundaries = checkpoints(prompt_cache, n_cached, end, job.rendered.system_len)
        if not boundaries and n_cached < end:
            boundaries = [end]  # trimmable: the prompt's state serves every shorter prefix
        cuts = [n_cached, *boundaries, len(tokens)]
        segments = [tokens[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        (uid,) = self.gen.insert_segments(
            [segments],
            max_tokens=[max_tokens],
            caches=[prompt_cache],
            all_tokens=[tokens[:n_cached]],
            samplers=[sampler_for(job.request.sampling)],
            stop_sequences=[self.stop_sequences],
        )
        # No checkpoint on the way (all cached): the final state is stored, as when alone.
        run = Generation(prompt_cache, n_cached, checkpointed=bool(boundaries))
        self.active[uid] = _Seq(
            job,
            uid,
            run,
            engine._parser(job),
            engine.loaded.tokenizer.detokenizer,
            boundaries,
            end,
            estimate,
        )
        del prompt_cache  # the batch owns it now
        job.emit(Started(len(tokens), n_cached))
        if len(self.active) == 1:
            engine.watchdog.begin("a batch of requests")

    def _step(self) -> None:
        engine = self.engine
        decoding = any(not s.prefilling for s in self.active.values())
        # A prefill chunk runs between two decode steps: keep it short while others decode.
        self.gen.prefill_step_size = max(128, self.step_size // 4) if decoding else self.step_size
        prompt_responses, gen_responses = self.gen.next()
        engine.watchdog.beat()
        for r in prompt_responses:
            seq = self.active.get(r.uid)
            if seq is None:
                continue
            if r.end_of_segment and not r.end_of_prompt and seq.boundaries:
                self._checkpoint(seq, seq.boundaries.pop(0))
            done, total = r.progress
            if 0 < done < total:
                seq.job.emit(Progress(done + seq.run.n_cached, total + seq.run.n_cached))
        if gen_responses:
            self.peak_batch = max(self.peak_batch, len(gen_responses))
            self._rate.append((time.monotonic(), len(gen_responses)))
            while self._rate and time.monotonic() - self._rate[0][0] > RATE_WINDOW_S:
                self._rate.popleft()
        for r in gen_responses:
            seq = self.active.get(r.uid)
            if seq is not None:
                self._token(seq, r)

    def _checkpoint(self, seq: _Seq, n: int) -> None:
        cache, held = self.gen.extract_cache([seq.uid])[seq.uid]
        tokens = seq.job.rendered.tokens
        if len(held) != n:
            log.warning("checkpoint at %d holds %d tokens; not stored", n, len(held))
            return
        kind = "system" if n == seq.job.rendered.system_len and n < seq.end else "prompt"
        self.engine._store(tokens[:n], cache, kind=kind)
        seq.stored.add(n)

    def _token(self, seq: _Seq, r: Any) -> None:
        run, job = seq.run, seq.job
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
            run.prefilled = True
        run.generated.append(r.token)
        if r.finish_reason == "stop":
            seq.detokenizer.finalize()  # the end-of-turn token itself is not text
        else:
            seq.detokenizer.add_token(r.token)
            if r.finish_reason:
                seq.detokenizer.finalize()
        for event in seq.parser.feed(seq.detokenizer.last_segment):
            job.emit(event)
        if seq.parser.stopped:
            run.reason = "stop_sequence"
            final = self.gen.remove([seq.uid], return_prompt_caches=not run.checkpointed)
            run.prompt_cache = final.get(seq.uid, (None,))[0]
        elif r.finish_reason:
            run.reason = r.finish_reason
            run.prompt_cache = r.prompt_cache
        else:
            return
        self.engine._finish(job, run, seq.parser, _usage(job, run.n_cached))
        self._release(seq)  # done only once stored: the next request may count on it

    def _reap_cancelled(self) -> None:
        """Remove cancelled members at once; a prefill cut short keeps its state for a retry."""
        for seq in [s for s in self.active.values() if s.job.cancelled]:
            caches = self.gen.remove([seq.uid], return_prompt_caches=seq.prefilling)
            cache, held = caches.get(seq.uid, (None, []))
            if cache is not None and len(held) > seq.run.n_cached:
                self.engine._store(seq.job.rendered.tokens[: len(held)], cache)
                log.info("prefill cancelled; kept its KV state (%d tokens) for a retry", len(held))
            usage = _usage(seq.job, seq.run.n_cached)
            usage.completion_tokens = len(seq.run.generated)
            self.engine._finish_cancelled(seq.job, usage, time.perf_counter() - seq.run.started)
            self._release(seq)

    def _fail_all(self) -> None:
        from server.errors import InternalError
        from server.request import Failed

        uids = list(self.active)
        for seq in list(self.active.values()):
            seq.job.emit(Failed(InternalError()))
            self._release(seq)
        self.gen.remove(uids)
        self.engine._settle()

    def _release(self, seq: _Seq) -> None:
        self.active.pop(seq.uid, None)
        seq.job.done = True
        if not self.active:
            self.engine.watchdog.end()
            self.engine._snapshot_memory()


def _usage(job: Job, n_cached: int = 0):
    from server.request import Usage

    return Usage(prompt_tokens=len(job.rendered.tokens), cached_tokens=n_cached)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _memory_budget(engine: Any, mx: Any) -> int:
    """The device's limit (Metal's recommended working set, else RAM) less the weights and the
    prefix cache's RAM budget: what running sequences' KV may use."""
    import psutil

    try:
        limit = int(mx.device_info().get("max_recommended_working_set_size", 0))
    except Exception:
        limit = 0
    limit = limit or int(psutil.virtual_memory().total)
    ram = (engine.cache.stats() or {}).get("ram") or {}
    cache_budget = int(ram.get("budget_bytes", 0) or 0)
    return max(0, int(limit * 0.9) - int(mx.get_active_memory()) - cache_budget)
