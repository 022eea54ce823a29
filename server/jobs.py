"""The HTTP side of a generation: submit a job, read its events, stop it when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from server.engine import Engine, Job
from server.errors import InternalError, WorkerError
from server.request import (
    ChatRequest,
    Failed,
    Finished,
    Started,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)


class Heartbeat:
    """Nothing happened for a while (queue wait or a long prefill): streams may send a ping."""


def submit(engine: Engine, request: ChatRequest, rendered) -> Job:
    job = Job(request=request, rendered=rendered, loop=asyncio.get_running_loop())
    engine.submit(job)
    return job


async def events(job: Job, heartbeat_s: float = 5.0) -> AsyncIterator[Any]:
    """Yield the job's events until Finished/Failed; cancel the job if the consumer goes away."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=heartbeat_s)
            except TimeoutError:
                yield Heartbeat()
                continue
            yield event
            if isinstance(event, Finished | Failed):
                return
    finally:
        # Client disconnect cancels the consumer: stop generating so the next request runs.
        if not job.done:
            job.cancel()


@dataclass
class Collected:
    """A whole reply: blocks in order ("text", str) or ("tool", ToolCall), and how it ended."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)
    started: Started | None = None
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(value for kind, value in self.blocks if kind == "text")

    @property
    def calls(self) -> list[ToolCall]:
        return [value for kind, value in self.blocks if kind == "tool"]


async def collect(job: Job, is_disconnected) -> Collected:
    """Run a non-streaming request to the end, stopping early if the client disconnects."""
    out = Collected()
    async for event in events(job, heartbeat_s=0.5):
        if isinstance(event, Heartbeat):
            if await is_disconnected():
                job.cancel()
            continue
        if isinstance(event, Started):
            out.started = event
        elif isinstance(event, TextDelta):
            if out.blocks and out.blocks[-1][0] == "text":
                out.blocks[-1] = ("text", out.blocks[-1][1] + event.text)
            else:
                out.blocks.append(("text", event.text))
        elif isinstance(event, ToolCallDelta):
            out.blocks.append(("tool", event.call))
        elif isinstance(event, Failed):
            raise event.error if isinstance(event.error, WorkerError) else InternalError()
        elif isinstance(event, Finished):
            out.finished = event
    return out


def stats(finished: Finished | None) -> dict:
    """The per-request figures the access log line reports."""
    if finished is None:
        return {}
    return {
        "prompt": finished.usage.prompt_tokens,
        "cached": finished.usage.cached_tokens,
        "completion": finished.usage.completion_tokens,
        "ttft_ms": round(finished.ttft_s * 1000),
        "tps": round(finished.decode_tps, 1),
        "finish": finished.reason,
    }


async def prepare(engine: Engine, request: ChatRequest, *, check_context: bool = True):
    """Render and tokenize off the event loop (long prompts take a while); 503 while loading."""
    from starlette.concurrency import run_in_threadpool

    from server.errors import Overloaded

    if engine.renderer is None:
        raise Overloaded("the model is still loading", retry_after=2, status=503)
    return await run_in_threadpool(engine.renderer.render, request, check_context=check_context)
