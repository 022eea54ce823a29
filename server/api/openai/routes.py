"""OpenAI routes: /v1/chat/completions and /v1/models."""

from __future__ import annotations

import uuid
from functools import partial

from fastapi import APIRouter, Request

from server.api import serving
from server.api.documents import parts_carry_pdf
from server.api.model_names import check_model, listed_names
from server.api.openai.protocol import ChatCompletionRequest, to_chat_request
from server.api.openai.reply import completion_body
from server.api.openai.stream import encode
from server.edge.model_listing import model_entry

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    check_model(request.app.state.settings, body.model)
    pdf = any(parts_carry_pdf(m.content, "file") for m in body.messages)
    chat = await serving.to_internal(request, to_chat_request, body, pdf)
    job = await serving.start(request, chat, body)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = partial(
            encode, completion_id=completion_id, model=body.model, include_usage=include_usage
        )
        return serving.stream(request, job, sse)
    build = partial(completion_body, completion_id=completion_id, model=body.model)
    return await serving.reply(request, job, build)


@router.get("/v1/models")
async def list_models(request: Request):
    settings = request.app.state.settings
    created = int(request.app.state.engine.started_at)
    names = listed_names(settings)
    data = [model_entry(name, created) for name in names]
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": names[0],
        "last_id": names[-1],
    }


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request):
    settings = request.app.state.settings
    check_model(settings, model_id)
    return model_entry(model_id, int(request.app.state.engine.started_at))
