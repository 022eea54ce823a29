"""The trace tee: the outermost ASGI layer copies what a request sends and what goes back.

Nothing is buffered on the client's way: every message passes on at once, and a copy of its
bytes is appended to the exchange; parsing and writing happen on the store's thread.
"""

from __future__ import annotations

import time

from server.api.traces.record import Exchange
from server.api.traces.store import TraceStore

# Probes, status polls and the admin routes: no one debugs a client through them.
UNTRACED_PREFIXES = ("/health", "/v1/status", "/metrics", "/v1/trace", "/v1/cache", "/openapi")


def traced(path: str) -> bool:
    return not path.startswith(UNTRACED_PREFIXES)


def _pairs(raw: list) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


class TraceMiddleware:
    def __init__(self, app, store: TraceStore):
        self.app = app
        self.store = store

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.store.enabled or not traced(scope["path"]):
            return await self.app(scope, receive, send)
        exchange = Exchange(
            id="",
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            request_headers=_pairs(scope.get("headers", [])),
        )

        async def tee_receive():
            message = await receive()
            if message["type"] == "http.request":
                exchange.request_body += message.get("body", b"")
            return message

        async def tee_send(message):
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_headers = _pairs(message.get("headers", []))
            elif message["type"] == "http.response.body" and message.get("body"):
                at = time.perf_counter() - exchange.began
                exchange.chunks.append((at, bytes(message["body"])))
            await send(message)

        try:
            await self.app(scope, tee_receive, tee_send)
        finally:
            exchange.duration_s = time.perf_counter() - exchange.began
            # The inner middleware names each request (x-request-id, the access log's id).
            exchange.id = scope.get("state", {}).get("request_id") or f"{id(exchange):x}"
            self.store.submit(exchange)
