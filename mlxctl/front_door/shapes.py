"""What the front door itself says, in the shape of the protocol a path belongs to: errors
(JSON, or an event once a stream has begun) and the keep-alives of a held stream."""

from __future__ import annotations

import json

ANTHROPIC, RESPONSES, OPENAI = "anthropic", "responses", "openai"
# The worker's error kinds as each protocol names them (server/api/*/protocol.py).
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    503: "api_error",
}
_OPENAI_TYPES = {
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    503: "server_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 503: "service_unavailable"}
OVERLOADED = "overloaded_error"  # Anthropic's kind for "no room now, try later"


def protocol_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    return RESPONSES if path.startswith("/v1/responses") else OPENAI


def error_body(path: str, status: int, message: str, anthropic_kind: str = "") -> dict:
    if protocol_of(path) == ANTHROPIC:
        kind = anthropic_kind or _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = _OPENAI_TYPES.get(status, "server_error")
    code = _OPENAI_CODES.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def keep_alive(path: str) -> bytes:
    """Anthropic's SDKs skip `ping` events; OpenAI clients skip SSE comments. (A Responses
    stream gets a comment too: its own keep-alive repeats a response the worker has not made.)"""
    if protocol_of(path) == ANTHROPIC:
        return b'event: ping\ndata: {"type": "ping"}\n\n'
    return b": keep-alive\n\n"


def stream_error(path: str, body: dict) -> bytes:
    """An error after a held stream's 200: the stream ends with it, never just stops."""
    data = json.dumps(body)
    protocol = protocol_of(path)
    if protocol == ANTHROPIC:
        return f"event: error\ndata: {data}\n\n".encode()
    if protocol == RESPONSES:
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        event = {"type": "error", "code": error.get("code"), "message": error.get("message")}
        return f"event: error\ndata: {json.dumps(event)}\n\n".encode()
    return f"data: {data}\n\n".encode()
