"""Anthropic routes: /v1/messages (also ?beta=true) and /v1/messages/count_tokens."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server import jobs
from server.anthropic_api.protocol import (
    STOP_REASONS,
    CountTokensRequest,
    MessagesRequest,
    to_chat_request,
)
from server.anthropic_api.stream import encode, tool_use_id, usage_dict
from server.model_names import check_model

router = APIRouter()


@router.post("/v1/messages")
async def messages(body: MessagesRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    chat = to_chat_request(body)
    state = request.scope["state"]
    chat.request_id = state["request_id"]
    rendered = await jobs.prepare(engine, chat)
    job = jobs.submit(engine, chat, rendered)
    message_id = f"msg_{uuid.uuid4().hex[:24]}"

    def on_finish(finished):
        state["gen"] = jobs.stats(finished) if finished else {"finish": "error"}
        if finished is None:
            engine.metrics.stream_failed()

    if body.stream:
        stream = encode(
            jobs.events(job, settings.heartbeat_s),
            message_id=message_id,
            model=body.model,
            on_finish=on_finish,
        )
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    result = await jobs.collect(job, request.is_disconnected)
    on_finish(result.finished)
    content = []
    for kind, value in result.blocks:
        if kind == "text":
            content.append({"type": "text", "text": value})
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(value.id),
                    "name": value.name,
                    "input": value.arguments,
                }
            )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(result.finished.reason, "end_turn"),
        "stop_sequence": result.finished.stop_sequence,
        "usage": usage_dict(result.finished.usage),
    }


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    rendered = await jobs.prepare(engine, to_chat_request(body), check_context=False)
    return {"input_tokens": len(rendered.tokens)}
