"""The generation thread: owns the model and every MLX call; requests wait in a bounded queue.

HTTP handlers submit a Job and read its events from an asyncio queue; they never touch MLX.
Warm prompts take the same path before the worker says ready: render, cache lookup, generate one
token, store.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from server.batch_limits import DECODE_CONCURRENCY, PROMPT_CONCURRENCY, cannot_batch
from server.constrained.streaming import call_streamer
from server.errors import InternalError, Overloaded, ServiceUnavailable
from server.job import Cancelled, Job, JobQueue
from server.logits import default_factories, processors_for
from server.metrics import Metrics
from server.prefix_cache.kv_state import cache_len
from server.prefix_cache.seam import NoPrefixCache, PrefixCache
from server.prompt import PromptRenderer
from server.reasoning import reply_parser
from server.reply_parser import ReplyParser
from server.request import (
    ChatRequest,
    Failed,
    Finished,
    Started,
    Usage,
)
from server.scheduler import Scheduler
from server.sequential import Generation, generate_alone
from server.time_slices import SLICE_S
from server.watchdog import Watchdog

log = logging.getLogger("server.engine")


class Engine:
    def __init__(
        self,
        model_ref: str,
        *,
        max_queue: int = 16,
        max_output_tokens: int | None = None,
        prefill_step_size: int | None = None,
        metrics: Metrics | None = None,
        load_fn: Callable[[str], Any] | None = None,
        cache_factory: Callable[[Any], PrefixCache] | None = None,
        progress_timeout: float = 0.0,
        batch: bool = True,
        decode_concurrency: int = DECODE_CONCURRENCY,
        prompt_concurrency: int = PROMPT_CONCURRENCY,
        turn_seconds: float = SLICE_S,
        queue_timeout_s: float = 240.0,
        scheduler_factory: Callable[[Any], Scheduler] | None = None,
    ):
        self.model_ref = model_ref
        self.max_output_tokens = max_output_tokens
        self.prefill_step_size = prefill_step_size
        self.metrics = metrics or Metrics()
        self._load_fn = load_fn
        self._cache_factory = cache_factory
        self._queue = JobQueue(max_queue)
        self._thread = threading.Thread(target=self._main, name="generation", daemon=True)
        self._ready = threading.Event()
        self._accepting = True
        self._abort_timer: threading.Timer | None = None
        self.current: Job | None = None
        self.batch = batch  # False: one request at a time (the mode before batching)
        self.decode_concurrency = decode_concurrency
        self.prompt_concurrency = prompt_concurrency
        self.turn_seconds = turn_seconds
        self.queue_timeout_s = queue_timeout_s  # read by the HTTP side for non-stream requests
        # Set for ranks in lockstep (server.lockstep): they need the batched scheduler.
        self._scheduler_factory = scheduler_factory
        self.scheduler: Scheduler | None = None  # set on the generation thread once loaded
        self.unbatched: str | None = None  # why requests run one at a time
        self.loaded: Any = None
        self.renderer: PromptRenderer | None = None
        self.cache: PrefixCache = NoPrefixCache()
        self.load_error: str | None = None
        self.started_at = time.time()
        self.watchdog = Watchdog(progress_timeout)  # beats at every token and prefill chunk
        self._warm: list[tuple[str, ChatRequest]] = []
        self.processor_factories = default_factories()  # per-request logits processors
        # MLX memory figures, read on the generation thread after each job for the admin routes.
        self._memory = {"active_bytes": 0, "peak_bytes": 0, "cache_bytes": 0}

    # -- called from the HTTP side ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.watchdog.watch()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.load_error is None

    @property
    def queue_depth(self) -> int:
        running = self.scheduler.status()["running"] if self.scheduler else 0
        return self._waiting() + running + (1 if self.current is not None else 0)

    @property
    def batch_capacity(self) -> int:
        return self.decode_concurrency if self.scheduler is not None else 1

    def scheduler_status(self) -> dict:
        """Mode, running, waiting, batch size, aggregate tok/s (safe on the event loop)."""
        if self.scheduler is not None:
            return self.scheduler.status()
        return {
            "mode": "sequential",
            "reason": self.unbatched,
            "running": 1 if self.current is not None else 0,
            "waiting": len(self._queue),
            "batch_size": 1 if self.current is not None else 0,
        }

    def _waiting(self) -> int:
        return len(self._queue) + (self.scheduler.status()["waiting"] if self.scheduler else 0)

    def warm(self, prompts: list[tuple[str, ChatRequest]]) -> None:
        """Prefill these (name, request) pairs into the prefix cache after the model loads, before
        ready. Call before `start`; a prompt that fails is logged and skipped, never fatal."""
        self._warm = list(prompts)

    def memory(self) -> dict:
        """The last MLX memory snapshot plus the process's RSS (safe on the event loop)."""
        import psutil

        return {**self._memory, "rss_bytes": psutil.Process().memory_info().rss}

    def submit(self, job: Job) -> None:
        if not self._accepting:
            raise ServiceUnavailable("the server is shutting down", retry_after=5)
        if not self.ready:
            raise ServiceUnavailable("the model is still loading", retry_after=2)
        if self._waiting() >= self._queue.limit or not self._queue.put(job):
            raise Overloaded("too many requests are waiting; retry shortly")

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop accepting; fail queued jobs now; give the running one `grace_s` to finish."""
        self._accepting = False
        for job in self._queue.drain():
            job.emit(Failed(ServiceUnavailable("the server is shutting down")))
        scheduler = self.scheduler
        for job in list(scheduler.waiting) if scheduler else []:
            job.cancel("the server is shutting down")  # the scheduler fails it at once
        running = [self.current] if self.current is not None else []
        running += scheduler.in_flight() if scheduler else []

        def abort_later():
            for job in running:
                if not job.done:
                    job.cancel("the server is shutting down")

        if running:
            self._abort_timer = threading.Timer(grace_s, abort_later)
            self._abort_timer.daemon = True  # must not hold the process open after a clean stop
            self._abort_timer.start()

    def join(self) -> None:
        """Until the generation thread ends (a rank that follows rank 0)."""
        self._thread.join()

    def stop(self, timeout: float = 30.0) -> None:
        self._accepting = False
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._thread.is_alive():
            if self.current is not None:
                self.current.cancel("the server is shutting down")
            for job in self.scheduler.in_flight() if self.scheduler else []:
                job.cancel("the server is shutting down")
            self._queue.close()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("generation thread still busy after %.0fs", timeout)

    # -- the generation thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._load()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("could not load model %s", self.model_ref)
            self._ready.set()
            return
        self._warm_up()
        self._snapshot_memory()
        self.unbatched = None if self.batch else "batching is off"
        self.unbatched = self.unbatched or cannot_batch(self.loaded.model)
        if self.unbatched is None:
            self.scheduler = (self._scheduler_factory or Scheduler)(self)
        elif self._scheduler_factory is not None:
            # Ranks replay rank 0's batch decisions; the one-at-a-time loop makes none to share.
            self.load_error = f"serving across ranks needs the batched scheduler ({self.unbatched})"
            log.error("%s", self.load_error)
            self._ready.set()
            return
        else:
            log.info("scheduler: one request at a time (%s)", self.unbatched)
        self._ready.set()
        try:  # disk entries into RAM, most recent first, until the first job comes
            self.cache.prefetch(lambda: len(self._queue) > 0)
        except Exception:
            log.exception("prefix cache prefetch failed")
        if self.scheduler is not None:
            self.scheduler.run()
        while self.scheduler is None and (job := self._queue.get()) is not None:
            self._run_alone(job)
        try:
            self.cache.close()
        except Exception:
            log.exception("prefix cache close failed")

    def _run_alone(self, job: Job) -> None:
        job.admitted = time.perf_counter()
        self.current = job
        self.watchdog.begin(f"request {job.request.request_id}")
        try:
            self._run(job)
        except Exception:  # one bad request must not take the worker down
            log.exception("generation failed for request %s", job.request.request_id)
            job.emit(Failed(InternalError()))
        finally:
            self.watchdog.end()
            self._settle()
            self._snapshot_memory()
            job.done = True
            self.current = None

    @staticmethod
    def _settle() -> None:
        """Wait for work still queued on the device (a generation stopped mid-step leaves some)."""
        import mlx.core as mx

        try:
            mx.synchronize()
        except Exception:
            log.exception("synchronize failed")

    def _snapshot_memory(self) -> None:
        import mlx.core as mx

        self._memory = {
            "active_bytes": int(mx.get_active_memory()),
            "peak_bytes": int(mx.get_peak_memory()),
            "cache_bytes": int(mx.get_cache_memory()),
        }

    def _load(self) -> None:
        from server.model_loading import load_model

        started = time.perf_counter()
        self.loaded = (self._load_fn or load_model)(self.model_ref)
        self.renderer = PromptRenderer(self.loaded.tokenizer, self.loaded.config)
        if self._cache_factory is not None:
            self.cache = self._cache_factory(self.loaded)
        log.info(
            "model loaded: %s (backend %s, context %s, tool parser %s) in %.1fs",
            self.model_ref,
            self.loaded.backend,
            self.renderer.context_length,
            getattr(self.loaded.tokenizer.tool_parser, "__module__", None),
            time.perf_counter() - started,
        )

    def _run(self, job: Job) -> None:
        if job.cancelled:
            return self._finish_cancelled(job, Usage(), 0.0)
        tokens = job.rendered.tokens
        prompt_cache, n_cached = self._cache_for(tokens)
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=n_cached)
        job.emit(Started(len(tokens), n_cached))
        parser = self._parser(job)
        self._attach_processors(job)
        run = Generation(prompt_cache, n_cached)
        try:
            self._generate(job, run, parser, self._max_tokens(job.request, len(tokens)))
        except Cancelled:
            if not run.prefilled:
                # A prefill cut short keeps what it computed: a retry resumes from there.
                self._store(tokens, run.prompt_cache)
                log.info("prefill cancelled; kept its KV state for a retry")
            usage.completion_tokens = len(run.generated)
            return self._finish_cancelled(job, usage, time.perf_counter() - run.started)
        self._finish(job, run, parser, usage)

    def _cache_for(self, tokens: list[int]) -> tuple[list[Any], int]:
        """The prefix cache's state for `tokens` (or a fresh one), and how many it holds."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        prompt_cache, n_cached = self.cache.lookup(tokens)
        if prompt_cache is None:
            prompt_cache, n_cached = make_prompt_cache(self.loaded.model), 0
        if n_cached >= len(tokens):
            # At least one prompt token must run through the model to get the first logits.
            trim_prompt_cache(prompt_cache, n_cached - len(tokens) + 1)
            n_cached = len(tokens) - 1
        return prompt_cache, n_cached

    def _max_tokens(self, request: ChatRequest, prompt_tokens: int) -> int:
        """The request's own limit, capped by what is left of the context and the worker's cap."""
        limit = self.renderer.context_length
        budget = [request.max_tokens or ((limit - prompt_tokens) if limit else 4096)]
        if limit:
            budget.append(limit - prompt_tokens)
        if self.max_output_tokens:
            budget.append(self.max_output_tokens)
        return max(1, min(budget))

    def _parser(self, job: Job) -> ReplyParser:
        tokenizer, rendered = self.loaded.tokenizer, job.rendered
        answer = ReplyParser(
            tool_parser=tokenizer.tool_parser if rendered.parse_tools else None,
            call_start=tokenizer.tool_call_start,
            call_end=tokenizer.tool_call_end,
            tools=rendered.tools,
            stop=job.request.stop,
            primed=rendered.primed,
            call_streamer=call_streamer(rendered.constraint, rendered.tools),
        )
        return reply_parser(answer, tokenizer, rendered)  # reasoning split off, where it thinks

    def _attach_processors(self, job: Job) -> None:
        # Factories see the limit the request decodes under (the worker's cap included).
        limit = self._max_tokens(job.request, len(job.rendered.tokens))
        seen = dataclasses.replace(job, request=dataclasses.replace(job.request, max_tokens=limit))
        job.logits_processors = processors_for(self.processor_factories, seen, self.loaded)

    def _generate(self, job: Job, run: Generation, parser: ReplyParser, max_tokens: int) -> None:
        generate_alone(self, job, run, parser, max_tokens)

    def _finish(self, job: Job, run: Generation, parser: ReplyParser, usage: Usage) -> None:
        """Count the reply's tokens, flush the parser, report, and store the KV state."""
        generated, reason = run.generated, run.reason
        eos = self.loaded.tokenizer.eos_token_ids
        ends_with_eos = reason == "stop" and bool(generated) and generated[-1] in eos
        usage.completion_tokens = len(generated) - (1 if ends_with_eos else 0)
        usage.reasoning_tokens = min(getattr(parser, "reasoning_tokens", 0), len(generated))
        for event in parser.finish():
            job.emit(event)
        if any(getattr(p, "cut_short", False) for p in job.logits_processors):
            reason = "length"  # a call closed early to fit max_tokens: say it was cut
        if parser.calls and reason != "length":
            reason = "tool_calls"
        now = time.perf_counter()
        first = run.first_token_at or now
        self._record_prefill(len(job.rendered.tokens) - run.n_cached, first - run.started)
        decode_s = now - first
        tps = (len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else 0.0
        self.metrics.generation_done(
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            now - run.started,
            False,
        )
        queued = (job.admitted or job.submitted) - job.submitted
        job.emit(Finished(reason, usage, parser.stopped, first - job.submitted, tps, queued))
        if not run.checkpointed:  # the prompt but its last token, which the next re-renders
            self._store(job.rendered.tokens[:-1], run.prompt_cache)

    def _warm_up(self) -> None:
        from server.warm import warm_up

        warm_up(self, self._warm)

    def _record_prefill(self, n_tokens: int, seconds: float) -> None:
        # Measured speed lets the cache report the prefill seconds it saved. Short prefills are
        # mostly the first decode step, so they would skew it.
        if n_tokens >= 64 and seconds > 0:
            self.cache.record_prefill(n_tokens, seconds)

    def _store(self, tokens: list[int], prompt_cache: list[Any], kind: str = "prompt") -> None:
        offset = cache_len(prompt_cache) if prompt_cache else 0
        if offset <= 0:
            return
        try:
            self.cache.store(tokens[:offset], prompt_cache, kind=kind)
        except Exception:
            log.exception("prefix cache store failed")

    def _finish_cancelled(self, job: Job, usage: Usage, seconds: float) -> None:
        self.metrics.generation_done(
            usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, seconds, True
        )
        if job.abort_reason:
            job.emit(Failed(ServiceUnavailable(job.abort_reason)))
        else:
            job.emit(Finished("cancelled", usage))
