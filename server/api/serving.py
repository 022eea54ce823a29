"""The HTTP side of a generation, shared by both protocols: prepare, submit, stream or collect.

A route converts its body to a ChatRequest, then `start` renders and queues it; `stream` and
`reply` turn the job's events into a response through the protocol's encoder or body builder.
Each response carries the request's figures (`stats`) to the access log line on its last ASGI
message, so nothing is left in shared request state for the middleware to read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from array import array
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.api import token_marks
from server.api.images import warning_header
from server.api.last_request import REPLAYED_PATHS
from server.api.request_ring import Recorded
from server.engine.engine import Engine
from server.engine.job import Job
from server.errors import InternalError, Overloaded, ServiceUnavailable, WorkerError
from server.prompt.render import Rendered
from server.request import (
    ChatRequest,
    Collected,
    Failed,
    Finished,
    Heartbeat,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolCallBegin,
    ToolCallDelta,
)

log = logging.getLogger("server.api")

# The key of the last response message that carries the request's figures to the access log.
STATS_KEY = "mlxctl.stats"


async def prepare(engine: Engine, request: ChatRequest, *, check_context: bool = True) -> Rendered:
    """Render and tokenize off the event loop (long prompts take a while); 503 while loading."""
    if engine.renderer is None:
        raise ServiceUnavailable("the model is still loading", retry_after=2)
    return await run_in_threadpool(engine.renderer.render, request, check_context=check_context)


def reads_images(request: Request) -> bool:
    """Whether the loaded model reads images (else the protocols turn them into notes)."""
    renderer = request.app.state.engine.renderer
    return renderer is not None and renderer.images is not None


async def to_internal(request: Request, convert: Callable[..., ChatRequest], body,
                      heavy: bool = False) -> ChatRequest:  # fmt: skip
    """`convert(body)` into a ChatRequest; off the event loop where images are decoded or the
    body is `heavy` (a PDF to read)."""
    if not reads_images(request):
        return await run_in_threadpool(convert, body) if heavy else convert(body)
    return await run_in_threadpool(convert, body, vision=True)


def submit(engine: Engine, request: ChatRequest, rendered: Rendered) -> Job:
    job = Job(request=request, rendered=rendered, loop=asyncio.get_running_loop())
    job.queue_timeout_s = engine.queue_timeout_s
    engine.submit(job)
    return job


# Until its first token a stream hears from us this often: a queued client must never go silent.
WAITING_HEARTBEAT_S = 1.0


async def events(job: Job, heartbeat_s: float = 5.0) -> AsyncIterator[Any]:
    """Yield the job's events until Finished/Failed; cancel the job if the consumer goes away.
    Heartbeats come every WAITING_HEARTBEAT_S until the first token, then every `heartbeat_s`."""
    first_token = False
    try:
        while True:
            wait = heartbeat_s if first_token else min(heartbeat_s, WAITING_HEARTBEAT_S)
            try:  # a step's events arrive together: only the first waits (wait_for makes a task)
                event = job.events.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout=wait)
                except TimeoutError:
                    yield Heartbeat()
                    continue
            first_token = first_token or isinstance(
                event, TextDelta | ThinkingDelta | ToolCallDelta | ToolCallBegin
            )
            yield event
            if isinstance(event, Finished | Failed):
                return
    finally:
        # Client disconnect cancels the consumer: stop generating so the next request runs.
        if not job.done:
            job.cancel()


async def collect(job: Job, is_disconnected) -> Collected:
    """Run a non-streaming request to the end, stopping early if the client disconnects."""
    out = Collected()
    async for event in events(job, heartbeat_s=0.5):
        if isinstance(event, Heartbeat):
            if await is_disconnected():
                job.cancel()
            elif out.started is None and time.perf_counter() - job.submitted > job.queue_timeout_s:
                job.cancel()
                raise Overloaded("the request waited too long in the queue; retry", retry_after=5)
            continue
        if isinstance(event, Started):
            out.started = event
        elif isinstance(event, TextDelta | ThinkingDelta):
            kind = "text" if isinstance(event, TextDelta) else "thinking"
            if out.blocks and out.blocks[-1][0] == kind:
                out.blocks[-1] = (kind, out.blocks[-1][1] + event.text)
            else:
                out.blocks.append((kind, event.text))
        elif isinstance(event, ToolCallDelta):
            out.blocks.append(("tool", event.call))
        elif isinstance(event, Failed):
            raise event.error if isinstance(event.error, WorkerError) else InternalError()
        elif isinstance(event, Finished):
            out.finished = event
    return out


def stats(finished: Finished | None) -> dict:
    """The per-request figures the access log line reports; a failed stream has only "finish"."""
    if finished is None:
        return {"finish": "error"}
    drafts = finished.drafts or {}
    drafted = {  # speculative decoding, where the reply decoded alone and drafted
        "draft": drafts.get("source", "-"),
        "drafted": drafts.get("drafted", 0),
        "accepted": drafts.get("accepted", 0),
        "per_step": drafts.get("tokens_per_step", 0.0),
    }
    return {
        "prompt": finished.usage.prompt_tokens,
        "cached": finished.usage.cached_tokens,
        "completion": finished.usage.completion_tokens,
        "ttft_ms": round(finished.ttft_s * 1000),
        "queue_ms": round(finished.queue_s * 1000),
        "tps": round(finished.decode_tps, 1),
        "finish": finished.reason,
        **(drafted if finished.drafts else {}),
    }


def record(request: Request, job: Job, figures: dict) -> None:
    """Keep the finished request in the worker's ring (status "recent", `cache why`), and its
    body for a restart's replay. Only a reply that finished is kept: one that failed, hung or
    was cut off with its worker may be what killed it, and must not be run again at start."""
    body = getattr(request.state, "replay_body", None)
    kept = getattr(request.app.state, "last_request", None)
    if (
        body is not None
        and kept is not None
        and figures.get("finish") not in ("error", "cancelled")
    ):
        kept.keep(body)
    ring = getattr(request.app.state, "ring", None)
    if ring is None:
        return
    path = request.url.path
    protocol = "anthropic" if path.startswith("/v1/messages") else "openai"
    protocol = "responses" if path.startswith("/v1/responses") else protocol
    tokens = array("I", job.rendered.tokens)
    # Without its images' bytes: the ring keeps 16 requests, `cache why` reads their text.
    kept = dataclasses.replace(job.request, images=[]) if job.request.images else job.request
    ring.record(Recorded(kept.request_id, protocol, figures, kept, job.rendered.text, tokens))


# -- the route half -----------------------------------------------------------------------------


async def start(request: Request, chat: ChatRequest, body: Any = None) -> Job:
    """Render and queue `chat` under the request's id (set by the middleware); `body`, the
    request model, may carry the front door's resumed tokens (server.api.token_marks)."""
    engine = request.app.state.engine
    chat.request_id = request.scope["state"]["request_id"]
    token_marks.take(chat, request.headers, body)
    for note in chat.dropped:
        log.warning("request %s: %s", chat.request_id, note)
    rendered = await prepare(engine, chat)
    job = submit(engine, chat, engine.resumed(chat, rendered))
    replayed = request.url.path in REPLAYED_PATHS and not chat.resume
    if replayed and request.app.state.last_request is not None:  # kept once finished (record)
        request.state.replay_body = await request.body()  # read already: no second read
    return job


# An encoder: encode(events, on_finish=f) -> SSE text; f(Finished | None) once, None: failed.
Encoder = Callable[..., AsyncIterator[str]]


def stream(request: Request, job: Job, encode: Encoder) -> StreamingResponse:
    engine, settings = request.app.state.engine, request.app.state.settings

    def on_finish(finished: Finished | None) -> None:
        response.stats = stats(finished)
        record(request, job, response.stats)
        if finished is None:
            engine.metrics.stream_failed()

    job_events = events(job, settings.heartbeat_s)
    encoded = encode(job_events, on_finish=on_finish)
    if job.request.token_marks:
        encoded = token_marks.marked(encoded, job.sampled)
    response = _StreamWithStats(
        encoded,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", **warning_header(job.request.dropped)},
    )
    return response


async def reply(request: Request, job: Job, build: Callable[[Collected], dict]) -> JSONResponse:
    """Collect the whole reply and answer with the protocol's body for it."""
    result = await collect(job, request.is_disconnected)
    figures = stats(result.finished)
    record(request, job, figures)
    return _JSONWithStats(build(result), stats=figures, headers=warning_header(job.request.dropped))


class _CarriesStats(Response):
    """A response that adds `stats` to its last ASGI message (read by the access log); mixed in
    before JSONResponse or StreamingResponse, whose __call__ its super() reaches."""

    stats: dict | None = None

    async def __call__(self, scope, receive, send):
        async def send_with_stats(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                message = {**message, STATS_KEY: self.stats}
            await send(message)

        await super().__call__(scope, receive, send_with_stats)


class _JSONWithStats(_CarriesStats, JSONResponse):
    def __init__(self, content: dict, *, stats: dict, headers: dict[str, str]):
        super().__init__(content, headers=headers)
        self.stats = stats


class _StreamWithStats(_CarriesStats, StreamingResponse):
    pass
