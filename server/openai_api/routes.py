"""OpenAI routes: /v1/chat/completions and /v1/models."""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server import jobs
from server.model_names import check_model, served_names
from server.openai_api.protocol import FINISH_REASONS, ChatCompletionRequest, to_chat_request
from server.openai_api.stream import encode, usage_dict

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    check_model(settings, body.model)
    chat = to_chat_request(body)
    chat.request_id = request.scope["state"]["request_id"]
    rendered = await jobs.prepare(engine, chat)
    job = jobs.submit(engine, chat, rendered)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    state = request.scope["state"]

    def on_finish(finished):
        state["gen"] = jobs.stats(finished) if finished else {"finish": "error"}
        if finished is None:
            engine.metrics.stream_failed()

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = encode(
            jobs.events(job, settings.heartbeat_s),
            completion_id=completion_id,
            model=body.model,
            include_usage=include_usage,
            on_finish=on_finish,
        )
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    result = await jobs.collect(job, request.is_disconnected)
    on_finish(result.finished)
    calls = result.calls
    message = {"role": "assistant", "content": result.text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(result.finished.reason, "stop"),
            }
        ],
        "usage": usage_dict(result.finished.usage),
    }


def _model_entry(name: str, created: int) -> dict:
    # Both SDKs read this list: OpenAI's fields and Anthropic's side by side.
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "mlxctl",
        "type": "model",
        "display_name": name,
        "created_at": iso,
    }


@router.get("/v1/models")
async def list_models(request: Request):
    settings = request.app.state.settings
    created = int(request.app.state.engine.started_at)
    names = served_names(settings)
    data = [_model_entry(name, created) for name in names]
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
    return _model_entry(model_id, int(request.app.state.engine.started_at))
