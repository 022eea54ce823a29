"""One request through the front door: wait for a live worker, send it, relay the answer as it
comes (a stream resumed on the next worker where its worker died mid-answer: resume.py).

The worker is read through httpcore's pool over the door's own asyncio-protocol backend
(socket_io.py): a proxy wants none of httpx's client or its URL and header models (profiled).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Protocol

import httpcore

from mlxctl.front_door import resume, shapes
from mlxctl.front_door.asgi import Message, Scope, Send, body_chunk, send_json
from mlxctl.front_door.routes import RouteTable
from mlxctl.models.served import DEFAULT

log = logging.getLogger("mlxctl.front_door")


class Door(Protocol):
    """What an exchange reads of the door's app (proxy.FrontDoorApp)."""

    routes: RouteTable
    hold_seconds: float
    keep_alive_seconds: float
    transport: httpcore.AsyncConnectionPool | None


POLL_SECONDS = 0.05  # how often a held request looks at the route table
# No read timeout: a long prefill sends nothing for minutes (the worker pings).
TIMEOUTS = {"connect": 5.0, "read": None, "write": None, "pool": None}
# httpcore's errors past connecting: the worker took the request, or was taking it.
TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException)
# Per hop, never forwarded (RFC 9110 7.6.1); Host and Origin were checked here and the worker
# sees its own loopback address instead; the length is the body's the door sends.
_REQUEST_DROP = {
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"host",
    b"origin",
    b"content-length",
}
_RESPONSE_DROP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"trailer"}
_SENDS_BODY = {"POST", "PUT", "PATCH"}  # a Content-Length even of 0, as httpx sent
_URL = httpcore.URL
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class NotDelivered(Exception):
    """No worker listened at the route's port: the request was never sent, safe to send again."""


class WorkerGone(Exception):
    """The worker took the request and died before it answered."""


class StreamCut(Exception):
    """The worker died mid-stream and the stream resumes on the next one (resume.py)."""


class Exchange:
    """One request through the door: wait for a live worker, send, relay the answer."""

    def __init__(self, app: Door, scope: Scope, body: bytes, send: Send,
                 target: str = DEFAULT):  # fmt: skip
        self.app = app
        self.target = target  # the route key: "" the default model, else a [models.NAME]
        self.scope = scope
        self.path: str = scope["path"]
        self.body = body
        self._client_send = send
        self.answered = False  # the answer's last byte went to the client
        self.client_gone = False  # the client left before that
        self.started = False  # a held stream's 200 went out: errors become events
        self.retried = False  # a worker died on it once already
        self._streaming: bool | None = None
        # A chat POST asks for token marks; its stream, once one comes, can resume on a crash.
        self.resumable = resume.resumable(scope["method"], self.path)
        self.marks: resume.StreamResume | None = None

    @property
    def streaming(self) -> bool:
        """Whether the client asked for a stream (read only while it is held)."""
        if self._streaming is None:
            try:
                said = json.loads(self.body) if self.scope["method"] == "POST" else None
            except ValueError:
                said = None
            self._streaming = isinstance(said, dict) and said.get("stream") is True
        return self._streaming

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.app.hold_seconds
        next_ping = 0.0
        routes, ticket, wanting = self.app.routes, 0, False
        while True:
            route = routes.get(self.target)
            if route.asleep and not wanting:
                ticket, wanting = routes.want(self.target), True  # its worker starts for us
            elif not route.asleep:
                wanting = False
            refused = routes.refusal(self.target, ticket) if ticket else None
            if refused is not None:
                await self._fail(503, refused, shapes.OVERLOADED)
                return
            if route.url is not None:
                try:
                    await self._forward(route.url)
                    return
                except NotDelivered:
                    pass  # it died (the supervisor will notice): wait for the next one
                except StreamCut:  # held again until the restarted worker is live
                    deadline, next_ping = loop.time() + self.app.hold_seconds, 0.0
                except WorkerGone as exc:
                    if self.retried:
                        await self._fail(502, f"the worker went away before it answered ({exc})")
                        return
                    self.retried = True  # a crash: the restarted worker gets it, once
            elif route.down is not None:
                await self._fail(503, f"no worker is serving: {route.down}")
                return
            elif self.path == "/health" and not self.started:
                await send_json(self.send, 503, {"status": "starting", "front_door": True})
                return
            now = loop.time()
            if now >= deadline:
                await self._fail(503, f"no worker was ready within {self.app.hold_seconds:g}s")
                return
            if self.streaming and now >= next_ping:
                await self._start_stream()
                await self.send(body_chunk(shapes.keep_alive(self.path)))
                next_ping = now + self.app.keep_alive_seconds
            await asyncio.sleep(POLL_SECONDS)

    async def _forward(self, url: str) -> None:
        transport = self.app.transport
        assert transport is not None, "the front door's lifespan did not start"
        host, port, authority = _origin(url)
        target = self.scope["raw_path"]
        if self.scope.get("query_string"):
            target += b"?" + self.scope["query_string"]
        body = self.body
        headers = _without(self.scope["headers"], _REQUEST_DROP)
        headers.append((b"host", authority))
        if self.resumable:
            headers.append(resume.HEADER)
            if self.marks is not None:  # a resume: the reply's tokens so far go with it
                body = self.marks.body(body)
        if body or self.scope["method"] in _SENDS_BODY:
            headers.append((b"content-length", b"%d" % len(body)))
        request = httpcore.Request(self.scope["method"], _URL(scheme=b"http", host=host, port=port,
                                   target=target), headers=headers, content=body,
                                   extensions={"timeout": TIMEOUTS})  # fmt: skip
        with self.app.routes.serving(url, self.target):
            try:
                response = await transport.handle_async_request(request)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                raise NotDelivered(str(exc)) from exc
            except TRANSPORT_ERRORS as exc:
                raise WorkerGone(type(exc).__name__) from exc
            try:
                await self._relay(response)
            finally:
                await response.aclose()

    async def _relay(self, response: httpcore.Response) -> None:
        if self.started and response.status != 200:
            try:
                said = (await response.aread()).decode(errors="replace")
            except TRANSPORT_ERRORS:
                said = "the worker went away mid-answer"
            error = _json_or(said, self.path, response.status)
            await self.send(body_chunk(shapes.stream_error(self.path, error)))
            await self.send(body_chunk(b"", more=False))
            return
        sse = any(k.lower() == b"content-type" and b"text/event-stream" in v
                  for k, v in response.headers)  # fmt: skip
        if not self.started:
            headers = _without(response.headers, _RESPONSE_DROP)
            await self.send({"type": "http.response.start", "status": response.status,
                             "headers": headers})  # fmt: skip
            self.started = True
        if self.marks is None and self.resumable and sse and response.status == 200:
            self.marks = resume.StreamResume(self.path)
        marks = self.marks
        try:
            # The pool's own stream: bytes as the worker sent them.
            async for chunk in response.stream:  # type: ignore[union-attr]
                if marks is not None and not (chunk := marks.feed(chunk)):
                    continue  # marks only, or an event not complete yet
                await self.send(body_chunk(chunk))
        except TRANSPORT_ERRORS:
            if marks is not None and marks.can_resume():
                marks.begin_attempt()
                raise StreamCut() from None
            # The worker died mid-answer: a stream ends with an error, never just stops.
            if sse:
                body = shapes.error_body(self.path, 502, "the worker went away mid-answer")
                await self.send(body_chunk(shapes.stream_error(self.path, body)))
        await self.send(body_chunk(b"", more=False))

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.answered = True
        await self._client_send(message)

    async def _start_stream(self) -> None:
        if not self.started:
            await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            self.started = True

    async def _fail(self, status: int, message: str, anthropic_kind: str = "") -> None:
        body = shapes.error_body(self.path, status, message, anthropic_kind)
        if self.started:
            await self.send(body_chunk(shapes.stream_error(self.path, body)))
            await self.send(body_chunk(b"", more=False))
        else:
            await send_json(self.send, status, body)


def _without(headers, names: set[bytes]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in names]


@functools.lru_cache(maxsize=64)
def _origin(url: str) -> tuple[bytes, int, bytes]:
    """A worker's base URL (`http://127.0.0.1:PORT`) as (host, port, Host header)."""
    authority = url.split("://", 1)[1].rstrip("/")
    host, _, port = authority.rpartition(":")
    return host.strip("[]").encode(), int(port), authority.encode()


def _json_or(text: str, path: str, status: int) -> dict:
    try:
        said = json.loads(text)
    except ValueError:
        said = None
    return said if isinstance(said, dict) else shapes.error_body(path, status, text[:200])
