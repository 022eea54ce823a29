"""The FastAPI application: middleware (traces; auth, body limit, one log line) and error
handlers."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api import admin, anthropic, openai, responses
from server.api.last_request import LastRequest
from server.api.openapi import document
from server.api.request_ring import RequestRing
from server.api.serving import STATS_KEY
from server.api.traces import routes as trace_routes
from server.api.traces.middleware import TraceMiddleware
from server.api.traces.store import TraceStore
from server.engine.engine import Engine
from server.errors import (
    BadRequest,
    Forbidden,
    HTTPStatusError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    WorkerError,
)
from server.settings import Settings, host_allowed, host_of

log = logging.getLogger("server.access")
OPEN_PATHS = {"/health"}
# Polled every second by `mlxctl status --watch` and scrapers: at INFO they would flood the log.
POLLED_PATHS = {"/health", "/v1/status", "/metrics"}


def error_response(path: str, exc: WorkerError) -> JSONResponse:
    """An error in the shape of the protocol the path belongs to."""
    if path.startswith("/v1/messages"):
        status, body = anthropic.error_body(exc)
    elif path.startswith("/v1/responses"):
        status, body = responses.error_body(exc)
    else:
        status, body = openai.error_body(exc)
    return JSONResponse(body, status_code=status, headers=exc.headers)


class WorkerMiddleware:
    """Pure ASGI so it sees streamed responses through to their last byte (for the log line)."""

    def __init__(self, app, settings: Settings, engine: Engine):
        self.app = app
        self.settings = settings
        self.engine = engine

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        state = scope.setdefault("state", {})
        state["request_id"] = uuid.uuid4().hex[:12]
        status_box, stats_box = [500], [None]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message.setdefault("headers", []).append(
                    (b"x-request-id", state["request_id"].encode())
                )
            elif STATS_KEY in message:  # a generation's figures, on its response's last message
                message = dict(message)
                stats_box[0] = message.pop(STATS_KEY)
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            error = self._check(path, headers)
            if error is not None:
                await error_response(path, error)(scope, receive, send_wrapper)
            else:
                receive = await self._limit_body(headers, receive)
                await self.app(scope, receive, send_wrapper)
        except PayloadTooLarge as exc:
            await error_response(path, exc)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            self._log(scope, state["request_id"], status_box[0], elapsed, stats_box[0] or {})

    def _check(self, path: str, headers: dict[str, str]) -> WorkerError | None:
        error = self._check_origin(headers)
        if error is not None:
            return error
        key = self.settings.api_key
        if key and path not in OPEN_PATHS:
            given = headers.get("x-api-key") or ""
            auth = headers.get("authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), key.encode()):
                return Unauthorized(
                    "invalid or missing API key (x-api-key or Authorization: Bearer)"
                )
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.settings.max_body_bytes:
            return PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of "
                f"{self.settings.max_body_bytes} bytes"
            )
        return None

    def _check_origin(self, headers: dict[str, str]) -> WorkerError | None:
        """Refuse a Host or browser Origin that is not ours: a DNS-rebinding page sends both."""
        host = headers.get("host")
        if host is not None and not host_allowed(host_of(host), self.settings):
            return Forbidden(
                f"host {host!r} is not served here (configure allowed_hosts to serve it)"
            )
        origin = headers.get("origin")
        if origin is not None:
            authority = urlsplit(origin).netloc if "://" in origin else ""
            if not authority or not host_allowed(host_of(authority), self.settings):
                return Forbidden(f"origin {origin!r} is not allowed (see allowed_hosts)")
        return None

    async def _limit_body(self, headers: dict[str, str], receive):
        """Bodies without a content-length are read here so the limit holds for them too."""
        if "content-length" in headers or "transfer-encoding" not in headers:
            return receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.settings.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {self.settings.max_body_bytes} bytes"
                )
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), [False]

        async def replay():
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _log(self, scope, request_id: str, status: int, seconds: float, stats: dict) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        self.engine.metrics.request_done(endpoint, status)
        extra = " ".join(f"{k}={v}" for k, v in stats.items())
        # The supervisor probes /health every few seconds; status views poll /v1/status.
        # (a 401 too: `mlxctl status` asks without the key first, loading it costs time)
        quiet = scope["path"] in POLLED_PATHS and status in (200, 401)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s %d %.3fs %s",
            request_id,
            scope["method"],
            scope["path"],
            status,
            seconds,
            extra,
        )


def create_app(
    settings: Settings, engine: Engine, last_request: LastRequest | None = None
) -> TraceMiddleware:
    # The schema is served (behind the key) so schemathesis can check every route in CI.
    app = FastAPI(title="mlxctl worker", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.engine = engine
    app.state.ring = RequestRing()
    app.state.traces = TraceStore(
        settings.trace_dir, settings.trace_max_bytes, settings.trace_max_files, settings.api_key
    )
    app.state.responses = responses.open_store(settings)  # what `store: true` keeps
    app.state.last_request = last_request  # replayed before ready after a restart

    @app.exception_handler(WorkerError)
    async def worker_error(request: Request, exc: WorkerError):
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(request.url.path, BadRequest(_describe_validation(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        error: WorkerError
        if exc.status_code == 404:
            error = NotFound(f"no such endpoint: {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}")
        else:
            error = HTTPStatusError(exc.status_code, str(exc.detail))
        response = error_response(request.url.path, error)
        if exc.status_code == 405:  # RFC 9110: say what the path takes (all its routes' methods)
            response.headers["allow"] = ", ".join(_methods(request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logging.getLogger("server").exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, InternalError())

    app.include_router(admin.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(trace_routes.router)
    document(app)
    # Outermost, so a trace holds what the client saw: refusals (401, 413) and x-request-id.
    return TraceMiddleware(WorkerMiddleware(app, settings, engine), app.state.traces)


def _methods(request: Request) -> list[str]:
    """The methods some route serves at the request's path."""
    path, methods = request.url.path, set()
    for route in request.app.routes:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"
