"""Responses routes: POST /v1/responses (chained by `previous_response_id`, kept when `store`
is not false, run detached when `background`), the stored response's GET, DELETE,
/input_items and /cancel, input_tokens, and a quick no to the WebSocket transport
(`GET /v1/responses`) so Codex falls back to HTTP at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from server.api import serving, token_marks
from server.api.documents import parts_carry_pdf
from server.api.model_names import check_model
from server.api.responses import background
from server.api.responses.history import (
    as_items,
    conversation_of,
    page,
    references,
    resolved,
    with_ids,
)
from server.api.responses.protocol import InputTokensRequest, ResponsesRequest, convert
from server.api.responses.reply import Frame, response_body
from server.api.responses.store import ResponseStore
from server.api.responses.stream import encode
from server.api.responses.tools import ToolSet
from server.errors import BadRequest, MethodNotAllowed, NotFound
from server.request import ChatRequest, Collected

log = logging.getLogger("server.api")
router = APIRouter()


class ResponseNotFound(NotFound):
    """OpenAI's 404 for an unknown response id, an invalid_request_error (not not_found_error)."""

    kind = "bad_request"

    def __init__(self, response_id: str):
        super().__init__(f"Response with id '{response_id}' not found.")


def _store(request: Request) -> ResponseStore:
    return request.app.state.responses


def _runs(request: Request) -> background.Runs:
    """The background runs of this app, made on first use."""
    state = request.app.state
    if getattr(state, "background_runs", None) is None:
        state.background_runs = background.Runs()
    return state.background_runs


async def _record(request: Request, response_id: str) -> dict[str, Any]:
    record = await run_in_threadpool(_store(request).get, response_id)
    if record is None:
        raise ResponseNotFound(response_id)
    return record


async def _conversation(request: Request, body: InputTokensRequest) -> list[Any]:
    """The items to render: a previous response's conversation and output, then `input`."""
    before: list[Any] = []
    if body.previous_response_id:
        record = await run_in_threadpool(_store(request).get, body.previous_response_id)
        if record is None:  # OpenAI's answer, word for word: clients match on the code
            raise BadRequest(
                f"Previous response with id '{body.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        before = conversation_of(record)
    given = as_items(body.input)
    wanted = references(given)
    if wanted:  # items named by id: any stored response's input or output
        found = await run_in_threadpool(_store(request).find_items, wanted)
        given = resolved(given, found)
    return with_ids([*before, *given])


async def _convert(
    request: Request, body: InputTokensRequest, items: list[Any]
) -> tuple[ChatRequest, ToolSet]:
    """`convert`, off the event loop where the model reads images (they are decoded there) or
    an item holds a PDF (read there)."""
    pdf = any(parts_carry_pdf(i.get("content"), "input_file") for i in items if isinstance(i, dict))
    if not serving.reads_images(request):
        return await run_in_threadpool(convert, body, items) if pdf else convert(body, items)
    return await run_in_threadpool(partial(convert, body, items, vision=True))


@router.post("/v1/responses")
async def responses(body: ResponsesRequest, request: Request):
    check_model(request.app.state.settings, body.model)
    items = await _conversation(request, body)
    chat, tools = await _convert(request, body, items)
    store = _store(request)
    # OpenAI stores unless told not to (`store` defaults to true), and so do we.
    stored = body.store is not False and store.enabled
    frame = Frame(body, tools, stored=stored, background=bool(body.background))
    resumed = token_marks.response_ids(body)  # the front door resumes a stream a worker died in
    if resumed is not None:
        frame.response_id, frame.created_at = resumed.response_id, resumed.created_at
        frame.item_ids = resumed.items
    if frame.background:
        background.refused(body, frame.stored)

    def keep(response: dict) -> Awaitable[None]:
        """Hold `response` at once (a follow-up finds it) and start its write in a thread."""
        store.hold(response, items)
        return asyncio.get_running_loop().run_in_executor(None, store.write, response["id"])

    job = await serving.start(request, chat, body)
    if frame.background:
        return await _runs(request).start(request, job, frame, keep)
    if body.stream:
        return serving.stream(
            request, job, partial(encode, frame=frame, keep=keep if frame.stored else None)
        )
    built: list[dict] = []

    def build(result: Collected) -> dict:
        built.append(response_body(result, frame=frame))
        return built[0]

    reply = await serving.reply(request, job, build)
    if frame.stored:  # written while the reply is sent, within it (a graceful stop waits)
        reply.background = BackgroundTask(_settle, keep(built[0]))
    return reply


async def _settle(written: Awaitable[None]) -> None:
    await written


@router.post("/v1/responses/input_tokens")
async def input_tokens(body: InputTokensRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    chat = (await _convert(request, body, await _conversation(request, body)))[0]
    rendered = await serving.prepare(engine, chat, check_context=False)
    return {"object": "response.input_tokens", "input_tokens": len(rendered.tokens)}


@router.get("/v1/responses/{response_id}")
async def retrieve(response_id: str, request: Request):
    running = _runs(request).now(response_id)
    record = {"response": running} if running else await _record(request, response_id)
    # Read, not declared: the schema admits only what is served (OpenAI streams a background
    # run's events again; here a run is polled, not streamed).
    if request.query_params.get("stream", "false").lower() not in ("false", "0", ""):
        raise BadRequest(
            "a response is not streamed back here: GET it without stream (poll a background "
            "one until its status is final)",
            param="stream",
        )
    return background.as_polled(record["response"], running=running is not None)


@router.delete("/v1/responses/{response_id}")
async def delete(response_id: str, request: Request):
    await _runs(request).cancel(response_id)  # a run in progress stops first
    if not await run_in_threadpool(_store(request).delete, response_id):
        raise ResponseNotFound(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(
    response_id: str,
    request: Request,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
):
    record = await _record(request, response_id)
    return page(record["input_items"], after, limit, order)


@router.post("/v1/responses/{response_id}/cancel")
async def cancel(response_id: str, request: Request):
    record = await _record(request, response_id)
    if not record["response"].get("background"):
        raise BadRequest("Cannot cancel a synchronous response.")  # OpenAI's words
    if await _runs(request).cancel(response_id):
        record = await _record(request, response_id)
    return background.as_polled(record["response"], running=False)


# Not part of the API (the refusal of a transport): left out of the OpenAPI schema.
@router.get("/v1/responses", include_in_schema=False)
async def websocket_upgrade(request: Request):
    # Codex tries a WebSocket here first; a plain 405 makes it use POST without retrying.
    refused = MethodNotAllowed(
        "GET /v1/responses (the WebSocket transport) is not served; POST /v1/responses"
    )
    refused.headers["allow"] = "POST"  # RFC 9110: what the path takes
    raise refused
