"""Responses routes: POST /v1/responses, /v1/responses/input_tokens, and a quick no to the
WebSocket transport (`GET /v1/responses`) so Codex falls back to HTTP at once."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import APIRouter, Request

from server.api import serving
from server.api.model_names import check_model
from server.api.responses.protocol import InputTokensRequest, ResponsesRequest, convert
from server.api.responses.reply import Frame, response_body
from server.api.responses.stream import encode
from server.errors import MethodNotAllowed

log = logging.getLogger("server.api")
router = APIRouter()


@router.post("/v1/responses")
async def responses(body: ResponsesRequest, request: Request):
    check_model(request.app.state.settings, body.model)
    chat, tools = convert(body)
    if body.store:
        log.info("store: true answered with store: false (responses are not kept yet)")
    job = await serving.start(request, chat)
    frame = Frame(body, tools)
    if body.stream:
        return serving.stream(request, job, partial(encode, frame=frame))
    return await serving.reply(request, job, partial(response_body, frame=frame))


@router.post("/v1/responses/input_tokens")
async def input_tokens(body: InputTokensRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    rendered = await serving.prepare(engine, convert(body)[0], check_context=False)
    return {"object": "response.input_tokens", "input_tokens": len(rendered.tokens)}


# Not part of the API (the refusal of a transport): left out of the OpenAPI schema.
@router.get("/v1/responses", include_in_schema=False)
async def websocket_upgrade(request: Request):
    # Codex tries a WebSocket here first; a plain 405 makes it use POST without retrying.
    refused = MethodNotAllowed(
        "GET /v1/responses (the WebSocket transport) is not served; POST /v1/responses"
    )
    refused.headers["allow"] = "POST"  # RFC 9110: what the path takes
    raise refused
