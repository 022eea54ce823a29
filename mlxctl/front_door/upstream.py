"""The door's sockets to the worker: httpcore's network backend on asyncio's own protocol.

httpcore's default (anyio) opens a cancel scope per read and turns the socket's reading on and
off around each one (two epoll calls): about a third of the door's CPU per streamed event,
profiled. Here reading stays on and a read with bytes waiting returns them at once; httpx's
transport and httpcore's pool, HTTP/1.1 parsing and error mapping are unchanged.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# Past this many bytes unread the socket stops reading: a slow client slows the worker.
HIGH_WATER = 1 << 20


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # the worker closed its side (or the connection broke)
        self.error: Exception | None = None
        self.paused = False
        self.writable: asyncio.Future[None] | None = None  # set while the kernel's buffer is full

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended, self.error = True, exc
        self._wake()

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def _wake(self) -> None:
        if self.writable is not None and not self.writable.done() and self.ended:
            self.writable.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, reader: _Reader):
        self.transport, self.reader = transport, reader

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reader = self.reader
        if not reader.buffer and not reader.ended:
            reader.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(reader.waiter, timeout) if timeout else await reader.waiter
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading from the worker") from None
            finally:
                reader.waiter = None
        if reader.buffer:
            data = bytes(reader.buffer[:max_bytes])
            del reader.buffer[:max_bytes]
            if reader.paused and len(reader.buffer) <= HIGH_WATER // 2:
                self.transport.resume_reading()
                reader.paused = False
            return data
        if reader.error is not None:
            raise httpcore.ReadError(str(reader.error))
        return b""  # the worker's end of the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self.reader.ended or self.transport.is_closing():
            raise httpcore.WriteError("the connection to the worker is closed")
        self.transport.write(buffer)
        if (writable := self.reader.writable) is not None:  # a large body: wait for the worker
            await (asyncio.wait_for(writable, timeout) if timeout else writable)

    async def aclose(self) -> None:
        self.transport.close()

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle pooled connection the worker closed is not reused
            return self.reader.ended or bool(self.reader.buffer) or _readable(self.transport)
        if info in ("client_addr", "server_addr"):
            return self.transport.get_extra_info(
                "sockname" if info == "client_addr" else "peername"
            )
        if info == "socket":
            return self.transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            connecting = loop.create_connection(_Reader, host, port, local_addr=local)
            transport, reader = await asyncio.wait_for(connecting, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, reader)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def transport(
    limits: httpx.Limits, socket_options: list[tuple[int, int, int]]
) -> httpx.AsyncHTTPTransport:
    """httpx's transport (its request and response types and error mapping) on this backend."""
    made = httpx.AsyncHTTPTransport(limits=limits, socket_options=socket_options)
    made._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        socket_options=socket_options,
        network_backend=AsyncioBackend(),
    )
    return made


def _readable(transport: asyncio.Transport) -> bool:
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
