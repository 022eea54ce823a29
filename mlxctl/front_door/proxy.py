"""The front door's ASGI app: every path forwarded to the live worker, streamed as it comes.

A request waits (held) while no worker is live: a stream gets its 200 and keep-alives in the
protocol's shape, any other request just waits. A request no worker received (its port was
closed: it died) goes to the next live worker; one a worker died on before answering goes to the
next one once, then is a 502 (a request that crashes workers must not take down every next one).
A chat stream a worker died in resumes on the next one (resume.py), at most twice.
A client that goes away closes the upstream stream, which the worker takes as a cancel.
With `[models.NAME]` entries the request's `model` picks the route (by_model.py); one asleep
is wanted (the supervisor starts its worker) and the request waits for it like any held one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpcore

from mlxctl.front_door import shapes
from mlxctl.front_door.asgi import Receive, Scope, Send, read_body, send_json
from mlxctl.front_door.by_model import LISTING, listing, one_model, route_request
from mlxctl.front_door.exchange import Exchange
from mlxctl.front_door.guard import Guard
from mlxctl.front_door.routes import RouteTable
from mlxctl.front_door.socket_io import ProtocolBackend
from mlxctl.models.served import DEFAULT, Catalog

log = logging.getLogger("mlxctl.front_door")
KEEP_ALIVE_SECONDS = 5.0


class FrontDoorApp:
    def __init__(self, routes: RouteTable, guard: Guard, hold_seconds: float):
        self.routes = routes
        self.guard = guard
        self.hold_seconds = hold_seconds  # the longest a request waits for a worker
        self.keep_alive_seconds = KEEP_ALIVE_SECONDS
        # httpcore's pool, not httpx's client or transport: a proxy wants none of the client's
        # cookie jar, redirects or auth, nor httpx's URL and header models (profiled).
        self.transport: httpcore.AsyncConnectionPool | None = None
        self.catalog: Catalog | None = None  # several models by name (the daemon sets it)
        self.started = time.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:  # a WebSocket: the worker refuses them too
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # A request's head and body leave in one write (socket_io.py), but a large body
                # goes in several: without TCP_NODELAY one waits for the worker's delayed ACK.
                nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                self.transport = httpcore.AsyncConnectionPool(
                    max_connections=None, max_keepalive_connections=64, socket_options=nodelay,
                    network_backend=ProtocolBackend(),
                )  # fmt: skip
                warm_lazy_imports()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.transport is not None:
                    await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.guard.check(path, headers)
        if refusal is not None:
            error = shapes.error_body(path, refusal.status, refusal.message)
            await send_json(send, refusal.status, error)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client left before it finished sending
        target = DEFAULT
        catalog = self.catalog
        if catalog is not None and catalog.several:
            method = scope["method"]
            if method == "GET" and (path == LISTING or path.startswith(LISTING + "/")):
                await self._models(catalog, path, send)
                return
            routed, body, requested = route_request(catalog, method, body)
            if routed is None:
                served = ", ".join([*catalog.default_names[:1], *catalog.models])
                said = f"model {requested!r} is not served here; models served: {served}"
                await send_json(send, 404, shapes.error_body(path, 404, said))
                return
            target = routed
        # The exchange runs in this task (no task of its own to start); a client gone cancels
        # it, which closes the upstream stream (the worker's cue).
        this = asyncio.current_task()
        assert this is not None
        exchange = Exchange(self, scope, body, send, target)
        watch = asyncio.ensure_future(_cancel_when_gone(receive, this, exchange))
        try:
            await exchange.run()
        except asyncio.CancelledError:
            if not exchange.client_gone or this.uncancel() > 0:
                raise  # not the client's leaving: the server's shutdown
        except Exception as exc:
            log.error("front door: %s %s failed: %r", scope["method"], path, exc)
        finally:
            watch.cancel()

    async def _models(self, catalog: Catalog, path: str, send: Send) -> None:
        if path == LISTING:
            await send_json(send, 200, listing(catalog, self.routes, self.started))
            return
        found = one_model(catalog, self.routes, self.started, path)
        if found is None:
            said = f"model {path[len(LISTING) + 1 :]!r} is not served here"
            await send_json(send, 404, shapes.error_body(path, 404, said))
        else:
            await send_json(send, 200, found)


async def _cancel_when_gone(receive: Receive, task: asyncio.Task, exchange: Exchange) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    # uvicorn says the same once the answer is complete: the exchange then only tidies up
    # (its connection back to the pool), which a cancel would leave half done.
    if not exchange.answered:
        exchange.client_gone = True
        task.cancel()


def warm_lazy_imports() -> None:
    """Import what httpcore's pool first touches: anyio loads it lazily, which cost the first
    request through a new door 80 ms here (the event's backend module)."""
    import anyio

    anyio.Event()
