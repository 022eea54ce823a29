"""The generation thread: owns the model and every MLX call; requests wait in a bounded queue.

HTTP handlers submit a Job and read its events from an asyncio queue; they never touch MLX.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.errors import InternalError, Overloaded
from server.metrics import Metrics
from server.output import OutputParser
from server.prefix_seam import NoPrefixCache, PrefixCache
from server.prompt import PromptRenderer, Rendered
from server.request import (
    ChatRequest,
    Failed,
    Finished,
    Progress,
    Started,
    Usage,
)

log = logging.getLogger("server.engine")


class Cancelled(Exception):
    """Raised inside generation when the client went away."""


@dataclass
class Job:
    request: ChatRequest
    rendered: Rendered
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    done: bool = False

    def emit(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self, reason: str | None = None) -> None:
        self.abort_reason = reason
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class JobQueue:
    """A bounded FIFO where a job whose client left stops counting against the bound at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return sum(1 for job in self._jobs if not job.cancelled)

    def put(self, job: Job) -> bool:
        with self._cond:
            if self._closed or sum(1 for j in self._jobs if not j.cancelled) >= self.limit:
                return False
            self._jobs.append(job)
            self._cond.notify()
            return True

    def get(self) -> Job | None:
        """The next job, or None once closed."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            return self._jobs.popleft() if self._jobs else None

    def drain(self) -> list[Job]:
        with self._cond:
            jobs, self._jobs = list(self._jobs), collections.deque()
            return jobs

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


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
        self.loaded: Any = None
        self.renderer: PromptRenderer | None = None
        self.cache: PrefixCache = NoPrefixCache()
        self.load_error: str | None = None
        self.started_at = time.time()

    # -- called from the HTTP side ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.load_error is None

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + (1 if self.current is not None else 0)

    def submit(self, job: Job) -> None:
        if not self._accepting:
            raise Overloaded("the server is shutting down", retry_after=5, status=503)
        if not self.ready:
            raise Overloaded("the model is still loading", retry_after=2, status=503)
        if not self._queue.put(job):
            raise Overloaded("too many requests are waiting; retry shortly")

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop accepting; fail queued jobs now; give the running one `grace_s` to finish."""
        self._accepting = False
        for job in self._queue.drain():
            job.emit(Failed(Overloaded("the server is shutting down", status=503)))
        running = self.current

        def abort_later():
            if running is not None and not running.done:
                running.cancel("the server is shutting down")

        if running is not None:
            self._abort_timer = threading.Timer(grace_s, abort_later)
            self._abort_timer.daemon = True  # must not hold the process open after a clean stop
            self._abort_timer.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._accepting = False
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._thread.is_alive():
            if self.current is not None:
                self.current.cancel("the server is shutting down")
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
        self._ready.set()
        while True:
            job = self._queue.get()
            if job is None:
                break
            self.current = job
            try:
                self._run(job)
            except Exception as exc:  # one bad request must not take the worker down
                log.exception("generation failed for request %s", job.request.request_id)
                job.emit(Failed(InternalError()))
                del exc
            finally:
                self._settle()
                job.done = True
                self.current = None
        try:
            self.cache.close()
        except Exception:
            log.exception("prefix cache close failed")

    @staticmethod
    def _settle() -> None:
        """Wait for work still queued on the device (a generation stopped mid-step leaves some)."""
        import mlx.core as mx

        try:
            mx.synchronize()
        except Exception:
            log.exception("synchronize failed")

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
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        if job.cancelled:
            return self._finish_cancelled(job, Usage(), 0.0)
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        request, rendered = job.request, job.rendered
        tokens = rendered.tokens

        prompt_cache, n_cached = self.cache.lookup(tokens)
        if prompt_cache is None:
            prompt_cache, n_cached = make_prompt_cache(model), 0
        if n_cached >= len(tokens):
            # At least one prompt token must run through the model to get the first logits.
            trim_prompt_cache(prompt_cache, n_cached - len(tokens) + 1)
            n_cached = len(tokens) - 1
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=n_cached)
        job.emit(Started(len(tokens), n_cached))

        limit = self.renderer.context_length
        budget = [request.max_tokens or ((limit - len(tokens)) if limit else 4096)]
        if limit:
            budget.append(limit - len(tokens))
        if self.max_output_tokens:
            budget.append(self.max_output_tokens)
        max_tokens = max(1, min(budget))

        s = request.sampling
        sampler = make_sampler(
            temp=s.temperature, top_p=s.top_p if s.top_p < 1.0 else 0.0, top_k=s.top_k
        )
        if s.seed is not None:
            mx.random.seed(s.seed)
        parser = OutputParser(
            tool_parser=tokenizer.tool_parser if rendered.parse_tools else None,
            call_start=tokenizer.tool_call_start,
            call_end=tokenizer.tool_call_end,
            tools=rendered.tools,
            stop=request.stop,
            primed=rendered.primed,
        )

        def progress(processed: int, total: int) -> None:
            if job.cancelled:
                raise Cancelled
            if 0 < processed < total:  # after each prefill chunk: lets streams send a ping
                job.emit(Progress(processed, total))

        kwargs = {"prefill_step_size": self.prefill_step_size} if self.prefill_step_size else {}
        generated: list[int] = []
        reason = "length"
        first_token_at = None
        started = time.perf_counter()
        try:
            for response in stream_generate(
                model,
                tokenizer,
                mx.array(tokens[n_cached:]),
                max_tokens=max_tokens,
                sampler=sampler,
                prompt_cache=prompt_cache,
                prompt_progress_callback=progress,
                **kwargs,
            ):
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if job.cancelled:
                    raise Cancelled
                generated.append(response.token)
                for event in parser.feed(response.text):
                    job.emit(event)
                if parser.stopped:
                    reason = "stop_sequence"
                    break
                if response.finish_reason:
                    reason = response.finish_reason
        except Cancelled:
            usage.completion_tokens = len(generated)
            return self._finish_cancelled(job, usage, time.perf_counter() - started)

        if reason == "stop" and generated and generated[-1] in tokenizer.eos_token_ids:
            usage.completion_tokens = len(generated) - 1
        else:
            usage.completion_tokens = len(generated)
        for event in parser.finish():
            job.emit(event)
        if parser.calls and reason != "length":
            reason = "tool_calls"
        now = time.perf_counter()
        self._record_prefill(len(tokens) - n_cached, (first_token_at or now) - started)
        ttft = (first_token_at or now) - job.submitted
        decode_s = now - (first_token_at or now)
        tps = (len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else 0.0
        self.metrics.generation_done(
            usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, now - started, False
        )
        job.emit(Finished(reason, usage, parser.stopped, ttft, tps))
        self._store(tokens + generated, prompt_cache)

    def _record_prefill(self, n_tokens: int, seconds: float) -> None:
        # Measured speed lets the cache report the prefill seconds it saved. Short prefills are
        # mostly the first decode step, so they would skew it.
        record = getattr(self.cache, "record_prefill", None)
        if record is not None and n_tokens >= 64 and seconds > 0:
            record(n_tokens, seconds)

    def _store(self, tokens: list[int], prompt_cache: list[Any]) -> None:
        offset = getattr(prompt_cache[0], "offset", None) if prompt_cache else None
        if not isinstance(offset, int) or offset > len(tokens):
            return
        try:
            self.cache.store(tokens[:offset], prompt_cache)
        except Exception:
            log.exception("prefix cache store failed")

    def _finish_cancelled(self, job: Job, usage: Usage, seconds: float) -> None:
        self.metrics.generation_done(
            usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, seconds, True
        )
        if job.abort_reason:
            job.emit(Failed(Overloaded(job.abort_reason, status=503)))
        else:
            job.emit(Finished("cancelled", usage))
