"""One exchange (a request and what was sent back) and its trace document, format 1.

Redaction happens here: auth headers become "[redacted]", and so do key-like query parameters;
the values they carried, and the worker's own API key, are scrubbed wherever else they appear.
Stdlib only: built on the trace writer's thread, never on the event loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

FORMAT = "mlxctl-trace/1"
REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "token", "access_token"})
MIN_SECRET = 6  # shorter values are not scrubbed from the text: they would shred it


@dataclass
class Exchange:
    """What the middleware saw of one request: filled on the event loop, encoded elsewhere."""

    id: str
    method: str
    path: str
    query: str
    request_headers: list[tuple[str, str]]
    started_at: float = field(default_factory=time.time)
    began: float = field(default_factory=time.perf_counter)
    request_body: bytearray = field(default_factory=bytearray)
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (seconds in, bytes)
    duration_s: float = 0.0


def secrets_of(exchange: Exchange) -> set[str]:
    """The credentials this request carried: header values (and a bearer token on its own)."""
    found = set()
    for name, value in exchange.request_headers:
        if name in SECRET_HEADERS and value:
            found.add(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                found.add(token.strip())
    for name, value in parse_qsl(exchange.query, keep_blank_values=True):
        if name.lower() in SECRET_PARAMS and value:
            found.add(value)
    return found


def _headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        shown = REDACTED if name in SECRET_HEADERS else value
        headers[name] = f"{headers[name]}, {shown}" if name in headers else shown
    return headers


def _query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in pairs])


def _content_type(pairs: list[tuple[str, str]]) -> str:
    return next((v.lower() for k, v in pairs if k == "content-type"), "")


def _body(data: bytes, content_type: str) -> Any:
    """JSON as JSON, anything else as text; None when empty."""
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    if "json" in content_type or text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def sse_events(chunks: list[tuple[float, bytes]]) -> list[dict[str, Any]]:
    """A text/event-stream as sent: one entry per event (or keep-alive comment), with the
    seconds since the request began at which it was complete."""
    events: list[dict[str, Any]] = []
    pending = ""
    for at, chunk in chunks:
        pending += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        *complete, pending = pending.split("\n\n")
        events.extend(_event(block, at) for block in complete if block.strip())
    if pending.strip():
        events.append(_event(pending, chunks[-1][0]))
    return events


def _event(block: str, at: float) -> dict[str, Any]:
    event: dict[str, Any] = {"t": round(at, 4)}
    data: list[str] = []
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            event["comment"] = value
        elif name == "data":
            data.append(value)
        elif name in ("event", "id", "retry"):
            event[name] = value
    if data:
        text = "\n".join(data)
        try:
            event["data"] = json.loads(text)
        except ValueError:
            event["data"] = text  # `[DONE]`, or text that is not JSON
    return event


def document(exchange: Exchange) -> dict[str, Any]:
    """The trace as a JSON-ready dict (the README's "Request traces" describes each key)."""
    content_type = _content_type(exchange.response_headers)
    stream = content_type.startswith("text/event-stream")
    body = b"".join(chunk for _, chunk in exchange.chunks)
    response: dict[str, Any] = {
        "status": exchange.status,
        "headers": _headers(exchange.response_headers),
        "stream": stream,
    }
    if stream:
        response["events"] = sse_events(exchange.chunks)
    else:
        response["body"] = _body(body, content_type)
    return {
        "format": FORMAT,
        "id": exchange.id,
        "started_at": round(exchange.started_at, 3),
        "duration_s": round(exchange.duration_s, 4),
        "request": {
            "method": exchange.method,
            "path": exchange.path,
            "query": _query(exchange.query),
            "headers": _headers(exchange.request_headers),
            "body": _body(bytes(exchange.request_body), _content_type(exchange.request_headers)),
        },
        "response": response,
    }


def encode(exchange: Exchange, known_secrets: set[str]) -> bytes:
    """The trace file's bytes: the document, with every credential scrubbed from its text."""
    text = json.dumps(document(exchange), ensure_ascii=False, indent=1)
    for secret in sorted(secrets_of(exchange) | known_secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET:
            text = text.replace(json.dumps(secret, ensure_ascii=False)[1:-1], REDACTED)
    return text.encode("utf-8", "replace") + b"\n"
