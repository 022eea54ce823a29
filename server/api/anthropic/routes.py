"""Anthropic routes: /v1/messages (also ?beta=true) and /v1/messages/count_tokens."""

from __future__ import annotations

import uuid
from functools import partial

from fastapi import APIRouter, Request

from server.api import serving
from server.api.anthropic.protocol import (
    CountTokensRequest,
    MessagesRequest,
    shows_thinking,
    to_chat_request,
)
from server.api.anthropic.reply import message_body
from server.api.anthropic.stream import encode
from server.api.documents import carries_pdf
from server.api.model_names import check_model

router = APIRouter()


@router.post("/v1/messages")
async def messages(body: MessagesRequest, request: Request):
    check_model(request.app.state.settings, body.model)
    chat = await serving.to_internal(request, to_chat_request, body, carries_pdf(body.messages))
    job = await serving.start(request, chat, body)
    message_id, show_thinking = f"msg_{uuid.uuid4().hex[:24]}", shows_thinking(body)
    if body.stream:
        sse = partial(encode, message_id=message_id, model=body.model, show_thinking=show_thinking)
        return serving.stream(request, job, sse)
    build = partial(
        message_body, message_id=message_id, model=body.model, show_thinking=show_thinking
    )
    return await serving.reply(request, job, build)


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    chat = await serving.to_internal(request, to_chat_request, body, carries_pdf(body.messages))
    rendered = await serving.prepare(engine, chat, check_context=False)
    return {"input_tokens": len(rendered.tokens)}
