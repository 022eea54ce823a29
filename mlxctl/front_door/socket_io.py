"""httpcore's network I/O for the door's hop to its worker, on a plain asyncio Protocol.

httpcore's default (anyio) streams switch the socket's reading on and off around every read and
open a cancel scope for each: most of the door's CPU per streamed token (profiled). Here the
transport reads as bytes come, into a buffer a read takes from; reading pauses only while the
reader lags more than HIGH_WATER bytes behind, and resumes once it has caught up to LOW_WATER.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpcore

HIGH_WATER = 1 << 20  # unread bytes at which the socket's reading pauses
LOW_WATER = HIGH_WATER // 4  # ...and at which it resumes
FLUSH_BYTES = 1 << 16  # a request's writes held back past this leave at once
SPINS = 4  # turns of the loop a read with nothing come yet takes before it parks


class _Connection(asyncio.Protocol):
    """The transport's events: bytes into the buffer, a waiting reader or writer woken."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.unread = 0
        self.eof = False  # the peer sent all it will send
        self.lost: BaseException | None = None  # why the connection broke (after its bytes)
        self.closed = False
        self.paused = False  # reading paused: the reader lags HIGH_WATER behind
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None  # set while the transport's buffer is full

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.unread += len(data)
        if self.unread > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        _wake(self.reader)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.reader)
        return False  # the transport closes: an HTTP/1.1 client has nothing left to say

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self.lost = exc
        _wake(self.reader)
        _wake(self.writer)

    def pause_writing(self) -> None:
        if self.writer is None or self.writer.done():
            self.writer = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        _wake(self.writer)

    def take(self, max_bytes: int) -> bytes:
        """Up to max_bytes of what came, in order (a whole chunk as it came when it fits)."""
        first = self.chunks.popleft()
        if len(first) > max_bytes:
            self.chunks.appendleft(first[max_bytes:])
            first = first[:max_bytes]
        self.unread -= len(first)
        if self.paused and self.unread <= LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return first


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class ProtocolStream(httpcore.AsyncNetworkStream):
    """A request's writes leave together when its answer is awaited (or past FLUSH_BYTES):
    httpcore writes the head and the body apart, and the worker would wake for each."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection):
        self._transport = transport
        self._conn = connection
        self._unsent: list[bytes] = []
        self._unsent_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        conn = self._conn
        if self._unsent:
            # As httpcore does: the peer may have answered before it closed.
            with contextlib.suppress(httpcore.WriteError):
                await self._flush(timeout)
        # A few turns of the loop before parking, as anyio's checkpoints took: a door parked at
        # once paced the stand-in worker's stream 3% slower (bench/front_door.py --fake-worker).
        for _ in range(SPINS):
            if conn.chunks or conn.eof or conn.closed:
                break
            await asyncio.sleep(0)
        while not conn.chunks:
            if conn.lost is not None:
                raise httpcore.ReadError(str(conn.lost) or type(conn.lost).__name__)
            if conn.eof or conn.closed:
                return b""  # the peer's end: httpcore tells a cut answer from a whole one
            conn.reader = asyncio.get_running_loop().create_future()
            try:
                await _within(conn.reader, timeout, httpcore.ReadTimeout)
            finally:
                conn.reader = None
        return conn.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._conn.closed or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._unsent.append(buffer)
        self._unsent_bytes += len(buffer)
        if self._unsent_bytes >= FLUSH_BYTES:
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        conn = self._conn
        unsent, self._unsent, self._unsent_bytes = self._unsent, [], 0
        if conn.closed or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))
        while conn.writer is not None and not conn.writer.done():
            await _within(asyncio.shield(conn.writer), timeout, httpcore.WriteTimeout)
        if conn.lost is not None:
            raise httpcore.WriteError(str(conn.lost) or type(conn.lost).__name__)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("the door speaks plain HTTP to its loopback worker")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the pool's test of an idle connection: did the peer close?
            conn = self._conn
            return bool(conn.chunks) or conn.eof or conn.closed
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        return None


class ProtocolBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            made = loop.create_connection(_Connection, host, port, local_addr=local)
            transport, connection = await _within(made, timeout, httpcore.ConnectTimeout)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return ProtocolStream(transport, connection)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("the door reaches its worker over TCP")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _within(awaitable: Any, timeout: float | None, error: type[Exception]) -> Any:
    if timeout is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise error(f"no answer within {timeout:g}s") from None
