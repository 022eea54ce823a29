"""Background responses (`background: true`): the reply runs detached from its request, the
client polls `GET /v1/responses/{id}` and may cancel it, which stops the generation.

A run is stored as `queued` at once and again when it ends; while it runs, this worker's
`Runs` answers for it (`in_progress`). A stored run that no worker runs any more (the worker
stopped first) reads as `failed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from server.api import serving
from server.api.responses.reply import Frame, response_body
from server.engine.job import Job
from server.errors import BadRequest, InternalError, WorkerError

log = logging.getLogger("server.api")

UNFINISHED = ("queued", "in_progress")
# Holds a response in the store when called; its write, awaited (see stream.Keep).
Keep = Callable[[dict], Awaitable[None]]


@dataclass
class _Run:
    job: Job
    frame: Frame
    task: asyncio.Task | None = None


async def _never_disconnected() -> bool:
    return False  # nobody waits on the connection: the client polls


class Runs:
    """The background responses this worker runs now, by id."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    async def start(self, request: Request, job: Job, frame: Frame, keep: Keep) -> dict:
        queued = frame.response("queued", [])
        await keep(queued)  # GET finds it from the start, across a restart too
        run = _Run(job, frame)
        self._runs[frame.response_id] = run
        run.task = asyncio.create_task(self._finish(request, run, keep))
        return queued

    async def _finish(self, request: Request, run: _Run, keep: Keep) -> None:
        try:
            result = await serving.collect(run.job, _never_disconnected)
            serving.record(request, run.job, serving.stats(result.finished))
            response = response_body(result, frame=run.frame)
        except Exception as exc:  # the run's failure is its status, read by polling
            error = exc if isinstance(exc, WorkerError) else InternalError()
            if not isinstance(exc, WorkerError):
                log.exception("background response %s failed", run.frame.response_id)
            code = "rate_limit_exceeded" if error.kind == "overloaded" else "server_error"
            response = run.frame.response("failed", [], error={"code": code, "message": str(error)})
        try:
            await keep(response)  # stored before it leaves `_runs`: a poll never sees it go back
        finally:
            self._runs.pop(run.frame.response_id, None)

    def now(self, response_id: str) -> dict | None:
        """The response of a run in progress here, or None."""
        run = self._runs.get(response_id)
        return None if run is None else run.frame.response("in_progress", [])

    async def cancel(self, response_id: str) -> bool:
        """Stop a run in progress here and wait for it to be stored (`cancelled`)."""
        run = self._runs.get(response_id)
        if run is None or run.task is None:
            return False
        run.job.cancel()  # no reason: it ends as Finished("cancelled"), not as a failure
        await asyncio.shield(run.task)
        return True


def refused(body: Any, stored: bool) -> None:
    """What a background request must be here: stored (it is polled from the store), unstreamed."""
    if not stored:
        raise BadRequest(
            "a background response is read back from the store: it needs store (not false) "
            "and a worker that stores responses (--responses-max-count above 0)",
            param="store",
        )
    if body.stream:
        raise BadRequest(
            "background responses are not streamed here: poll GET /v1/responses/{id}",
            param="stream",
        )


def as_polled(response: dict[str, Any], running: bool) -> dict[str, Any]:
    """A stored response as a poll reads it: an unfinished run no worker runs is failed."""
    if running or response.get("status") not in UNFINISHED:
        return response
    error = {"code": "server_error", "message": "the worker stopped before this response ended"}
    return {**response, "status": "failed", "error": error}
