"""The served OpenAPI schema says what the worker really sends (schemathesis checks it in CI).

FastAPI documents a 422 for validation errors, a JSON body for every 200 and nothing else. The
worker answers a validation error with 400 and any error in its protocol's shape, streams as
server-sent events, serves /metrics as Prometheus text and /health's 503 while it loads.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_TEXT = {"type": "string"}
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": _TEXT, "message": _TEXT},
        },
    },
}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": _TEXT,
                "type": _TEXT,
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["ok", "loading", "stuck", "error"]}, "error": _TEXT},
}
STREAMED = ("/v1/messages", "/v1/chat/completions")


def _json(schema: dict) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def document(app: FastAPI) -> None:
    """Serve the schema with the worker's real responses (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    _responses(path, operation["responses"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _responses(path: str, responses: dict[str, Any]) -> None:
    responses.pop("422", None)  # validation errors are 400s, in the protocol's shape
    error = ANTHROPIC_ERROR if path.startswith("/v1/messages") else OPENAI_ERROR
    responses["default"] = {
        "description": "an error, in the protocol's shape",
        "content": _json(error),
    }
    ok = responses.setdefault("200", {"description": "OK"})
    if path == "/metrics":
        ok["content"] = {"text/plain": {"schema": _TEXT}}
    elif path == "/health":
        ok["content"] = _json(HEALTH)
        responses["503"] = {"description": "loading, stuck or failed", "content": _json(HEALTH)}
    elif path in STREAMED:
        ok.setdefault("content", {})["text/event-stream"] = {"schema": _TEXT}
