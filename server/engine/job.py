"""A generation job and the bounded queue it waits in before the generation thread takes it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from server.prompt.render import Rendered
from server.request import ChatRequest, Progress


class Cancelled(Exception):
    """Raised inside generation when the client went away."""


class Outbox:
    """A batch step's events, handed to each event loop in one wake-up instead of one per event
    (each wake-up is a write to the loop's self-pipe, and the loop contends for the GIL)."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list] = {}

    def put(self, loop: asyncio.AbstractEventLoop, events: asyncio.Queue, event: Any) -> None:
        self._by_loop.setdefault(loop, []).append((events, event))

    def flush(self) -> None:
        by_loop, self._by_loop = self._by_loop, {}
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list) -> None:
    for events, event in items:
        events.put_nowait(event)


@dataclass
class Job:
    request: ChatRequest
    rendered: Rendered
    loop: asyncio.AbstractEventLoop | None  # None: nobody listens (a warm prompt)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None
    done: bool = False
    admitted: float | None = None  # when the scheduler took it (queue time ends)
    waits_on: int | None = None  # the batch member whose prefill this job waits for
    waits_for_memory: bool = False  # admission found no room for it yet
    logits_processors: list = field(default_factory=list)  # set at admission (decoding.processors)
    outbox: Outbox | None = None  # set while in a batch: events leave once per step
    # The reply's tokens, appended before the events they produce (only where the request asked
    # for token marks): the HTTP side marks them in the stream from any thread.
    sampled: list[int] = field(default_factory=list)
    # A non-stream request still queued this long answers 429/529 (Claude Code retries at 300).
    queue_timeout_s: float = 240.0

    def emit(self, event: Any) -> None:
        if self.loop is None:
            return
        if self.outbox is not None:
            self.outbox.put(self.loop, self.events, event)
        else:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def on_prefill_progress(self, processed: int, total: int) -> None:
        """mlx-lm's prompt progress callback: stop a cancelled prefill, ping between chunks."""
        if self.cancelled:
            raise Cancelled
        if 0 < processed < total:
            self.emit(Progress(processed, total))

    def cancel(self, reason: str | None = None) -> None:
        self.abort_reason = reason
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


@dataclass
class Generation:
    """One generation's running state, batched or alone: the KV cache it extends and what it
    produced so far."""

    prompt_cache: list[Any] | None
    n_cached: int
    generated: list[int] = field(default_factory=list)
    reason: str = "length"
    first_token_at: float | None = None
    prefilled: bool = False  # the prompt (all but its last token) is in prompt_cache
    checkpointed: bool = False  # exact checkpoints were stored: the final state is not
    started: float = field(default_factory=time.perf_counter)
    drafts: Any = None  # its speculative.stats.DraftRecord while it may draft


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

    def get(self, timeout: float | None = None) -> Job | None:
        """The next job, or None once closed (or when `timeout` passed with none)."""
        with self._cond:
            if not self._jobs and not self._closed:
                self._cond.wait_for(lambda: self._jobs or self._closed, timeout)
            return self._jobs.popleft() if self._jobs else None

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self) -> list[Job]:
        with self._cond:
            jobs, self._jobs = list(self._jobs), collections.deque()
            return jobs

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
