"""The generation thread: owns the model and every MLX call; requests wait in a bounded queue.

HTTP handlers submit a Job and read its events from an asyncio queue; they never touch MLX.
Warm prompts take the same path before the worker says ready: render, cache lookup, generate one
token, store.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from server.decoding.processors import ProcessorFactory, default_factories
from server.engine import resume
from server.engine.batch_limits import cannot_batch
from server.engine.job import Job, JobQueue
from server.engine.replay import replay_last
from server.engine.runner import NO_MEMORY, Runner
from server.engine.scheduler import Scheduler
from server.engine.sequential import run_alone, warm_up
from server.engine.watchdog import Watchdog
from server.errors import Overloaded, ServiceUnavailable
from server.metrics import Metrics
from server.model.loading import LoadedModel
from server.prefix_cache.seam import NoPrefixCache, PrefixCache, Prepares
from server.prompt.render import PromptRenderer, Rendered
from server.request import ChatRequest, Failed
from server.settings import Settings

log = logging.getLogger("server.engine")


# Builds the scheduler from the runner and the queue (ranks in lockstep pass their own).
SchedulerFactory = Callable[[Runner, JobQueue], Scheduler]


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        load_fn: Callable[[str], LoadedModel] | None = None,
        cache_factory: Callable[[LoadedModel], PrefixCache] | None = None,
        scheduler_factory: SchedulerFactory | None = None,
        processor_factories: list[ProcessorFactory] | None = None,
    ):
        self.settings = settings
        self.model_ref = settings.model_path
        self.metrics = metrics or Metrics()
        self._load_fn = load_fn
        self._cache_factory = cache_factory
        self._queue = JobQueue(settings.max_queue)
        self._thread = threading.Thread(target=self._main, name="generation", daemon=True)
        self._ready = threading.Event()
        self._accepting = True
        self._abort_timer: threading.Timer | None = None
        self.queue_timeout_s = settings.queue_timeout_s  # read by the HTTP side (non-stream)
        # Set for ranks in lockstep (server.engine.lockstep): they need the batched scheduler.
        self._scheduler_factory = scheduler_factory
        self.scheduler: Scheduler | None = None  # set on the generation thread once loaded
        self.runner: Runner | None = None  # likewise
        self.unbatched: str | None = None  # why requests run one at a time
        self.loaded: LoadedModel | None = None
        self.renderer: PromptRenderer | None = None
        self.cache: PrefixCache = NoPrefixCache()
        self.load_error: str | None = None
        self.died: str | None = None  # why the generation thread ended by an error, if it did
        self.started_at = time.time()
        self.watchdog = Watchdog(settings.progress_timeout)  # beats at every token and chunk
        self._warm: list[tuple[str, ChatRequest]] = []
        self._replay: list[tuple[str, ChatRequest]] = []
        # Per-request logits processors (reasoning budgets, constrained calls by default).
        self._processor_factories = processor_factories or default_factories()

    # -- called from the HTTP side ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.watchdog.watch()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.load_error is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Until the model has loaded (or failed to: see `load_error`); False on timeout."""
        return self._ready.wait(timeout)

    @property
    def current(self) -> Job | None:
        """The job running one at a time, if any (safe from any thread)."""
        return self.runner.running_alone if self.runner is not None else None

    @property
    def queue_depth(self) -> int:
        running = self.scheduler.status()["running"] if self.scheduler else 0
        return self._waiting() + running + (1 if self.current is not None else 0)

    @property
    def batch_capacity(self) -> int:
        return self.settings.decode_concurrency if self.scheduler is not None else 1

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

    def resumed(self, request: ChatRequest, rendered: Rendered) -> Rendered:
        """`rendered` with the reply's resumed tokens after the prompt (server.engine.resume)."""
        runner, loaded = self.runner, self.loaded
        if not request.resume or runner is None or loaded is None:
            return rendered
        tokenizer = loaded.tokenizer
        limit = runner.max_tokens(request, rendered.prompt_tokens)
        eos = set(tokenizer.eos_token_ids)
        return resume.extend(rendered, request.resume, eos, limit, len(tokenizer))

    def _waiting(self) -> int:
        return len(self._queue) + (self.scheduler.status()["waiting"] if self.scheduler else 0)

    def warm(self, prompts: list[tuple[str, ChatRequest]]) -> None:
        """Prefill these (name, request) pairs into the prefix cache after the model loads, before
        ready. Call before `start`; a prompt that fails is logged and skipped, never fatal."""
        self._warm = list(prompts)

    def replay(self, prompts: list[tuple[str, ChatRequest]]) -> None:
        """Run these (the newest request before a restart) once before ready, storing nothing:
        the first turn after the restart then finds every first-use cost paid. Before `start`."""
        self._replay = list(prompts)

    def memory(self) -> dict:
        """The last MLX memory snapshot plus the process's RSS (safe on the event loop)."""
        import psutil

        snapshot = self.runner.memory if self.runner is not None else NO_MEMORY
        return {**snapshot, "rss_bytes": psutil.Process().memory_info().rss}

    def submit(self, job: Job) -> None:
        if self.died:
            raise ServiceUnavailable("the worker cannot generate; it restarts", retry_after=5)
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
        current = self.current
        running = [current] if current is not None else []
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
            if (current := self.current) is not None:
                current.cancel("the server is shutting down")
            for job in self.scheduler.in_flight() if self.scheduler else []:
                job.cancel("the server is shutting down")
            self._queue.close()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("generation thread still busy after %.0fs", timeout)

    # -- the generation thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._generate()
        except BaseException as exc:  # a dead thread must say so, whatever killed it
            self._thread_died(exc)

    def _thread_died(self, exc: BaseException) -> None:
        """Nothing generates any more: `/health` says so (the supervisor restarts the worker),
        and no request waits on the dead thread (queued and running ones fail now)."""
        self.died = f"{type(exc).__name__}: {exc}"
        self._accepting = False
        log.critical("generation thread died: %s", self.died, exc_info=exc)
        jobs = self._queue.drain()
        if (current := self.current) is not None:
            jobs.append(current)
        if (scheduler := self.scheduler) is not None:
            jobs += list(scheduler.waiting) + scheduler.in_flight()
            scheduler.outbox.flush()  # what they were sent before comes first
        for job in jobs:
            if not job.done:
                job.outbox = None  # straight out: the loop that flushed outboxes is gone
                job.emit(Failed(ServiceUnavailable("the worker cannot generate; it restarts")))
                job.done = True
        self._queue.close()
        try:  # the restart that follows should find the conversations on disk
            self.cache.close()
        except Exception:
            log.exception("prefix cache close failed")

    def _generate(self) -> None:
        try:
            runner = self._load()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("could not load model %s", self.model_ref)
            self._ready.set()
            return
        warm_up(runner, self._warm)
        runner.snapshot_memory()
        self.unbatched = None if self.settings.batch else "batching is off"
        self.unbatched = self.unbatched or cannot_batch(runner.loaded.model)
        if self.unbatched is None:
            self.scheduler = (self._scheduler_factory or Scheduler)(runner, self._queue)
        elif self._scheduler_factory is not None:
            # Ranks replay rank 0's batch decisions; the one-at-a-time loop makes none to share.
            self.load_error = f"serving across ranks needs the batched scheduler ({self.unbatched})"
            log.error("%s", self.load_error)
            self._ready.set()
            return
        else:
            log.info("scheduler: one request at a time (%s)", self.unbatched)
        try:  # the newest entry (read ahead while the model loaded) before ready: the first
            # turn after a restart is most likely its continuation, and must not wait for it
            self.cache.prefetch(_after_one_entry())
        except Exception:
            log.exception("prefix cache prefetch failed")
        replay_last(runner, self._replay)
        self._ready.set()
        try:  # the other disk entries into RAM, most recent first, until the first job comes
            self.cache.prefetch(lambda: len(self._queue) > 0)
        except Exception:
            log.exception("prefix cache prefetch failed")
        if self.scheduler is not None:
            self.scheduler.run()
        while self.scheduler is None and (job := self._queue.get()) is not None:
            run_alone(runner, job)
        try:
            self.cache.close()
        except Exception:
            log.exception("prefix cache close failed")

    def _load(self) -> Runner:
        from server.model.loading import load_model

        started = time.perf_counter()
        if isinstance(self._cache_factory, Prepares):
            try:  # e.g. disk entries read while the model loads
                self._cache_factory.prepare(self.model_ref)
            except Exception:
                log.exception("prefix cache preparation failed")
        self.loaded = loaded = (self._load_fn or load_model)(self.model_ref)
        self.renderer = renderer = PromptRenderer(
            loaded.tokenizer,
            loaded.config,
            self.settings.max_output_tokens,
            images=loaded.vision.layout if getattr(loaded, "vision", None) else None,
            copy_views=self.settings.speculative != "off",  # copy drafts read them
        )
        if self._cache_factory is not None:
            self.cache = self._cache_factory(loaded)
        log.info(
            "model loaded: %s (backend %s, context %s, tool parser %s) in %.1fs",
            self.model_ref,
            loaded.backend,
            renderer.context_length,
            getattr(loaded.tokenizer.tool_parser, "__module__", None),
            time.perf_counter() - started,
        )
        draft = None
        # After the target (its tokenizer is checked again); ranks in lockstep never draft.
        if self.settings.draft_model_path and self._scheduler_factory is None:
            from server.model.draft import load_draft

            draft = load_draft(self.settings.draft_model_path, loaded)
            log.info("draft model loaded: %s", self.settings.draft_model_path)
        mtp = None  # the checkpoint's own MTP head, where it has one (`auto` drafts with it)
        if self.settings.speculative in ("auto", "mtp") and self._scheduler_factory is None:
            from server.model.mtp import load_mtp

            mtp = load_mtp(loaded.model, loaded.path, loaded.config)
        if renderer.drops_tools:
            log.warning(
                "the chat template drops tools: requests with tools are served without them, "
                "a forced tool_choice is refused"
            )
        self.runner = Runner(
            loaded,
            renderer,
            self.cache,
            self.settings,
            metrics=self.metrics,
            watchdog=self.watchdog,
            processor_factories=self._processor_factories,
            draft=draft,
            mtp=mtp,
        )
        return self.runner


def _after_one_entry() -> Callable[[], bool]:
    """A prefetch's `should_stop`, asked before each entry: true from its second ask."""
    asked = itertools.count()
    return lambda: next(asked) > 0
