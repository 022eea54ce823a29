"""The door's httpcore backend on asyncio protocols, against raw loopback servers: bytes before
an end, a kept-alive connection the peer closed, and a reply larger than the pause threshold."""

from __future__ import annotations

import asyncio

import httpcore
import pytest

from mlxctl.front_door import socket_io
from mlxctl.front_door.socket_io import ProtocolBackend


async def serve(answer) -> tuple[asyncio.Server, str]:
    """A raw server: `answer(reader, writer)` per connection; its base URL."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def request(url: str, body: bytes = b"") -> httpcore.Request:
    headers = [(b"host", b"worker"), (b"content-length", b"%d" % len(body))]
    return httpcore.Request("POST", url + "/x", headers=headers, content=body)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))  # fmt: skip
    return await reader.readexactly(length)


def test_bytes_before_a_cut_are_read_and_the_cut_is_an_error():
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"x" * 10)
        writer.close()  # 90 bytes short

    async def main():
        server, url = await serve(answer)
        async with server, httpcore.AsyncConnectionPool(network_backend=ProtocolBackend()) as pool:
            reply = await pool.handle_async_request(request(url, b"{}"))
            await asyncio.sleep(0.2)  # the last bytes and the end both wait, unread
            got = []
            with pytest.raises(httpcore.RemoteProtocolError):
                async for chunk in reply.aiter_stream():
                    got.append(chunk)
            assert b"".join(got) == b"x" * 10

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_kept_alive_connection_the_peer_closed_is_not_reused():
    connections = []

    async def answer(reader, writer):
        connections.append(writer)
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # no Connection: close said: the pool keeps it, idle

    async def main():
        server, url = await serve(answer)
        async with server, httpcore.AsyncConnectionPool(network_backend=ProtocolBackend()) as pool:
            for n in range(3):
                reply = await pool.handle_async_request(request(url, b"%d" % n))
                assert await reply.aread() == b"%d" % n
                await reply.aclose()
                await asyncio.sleep(0.05)  # the peer's close arrives while the connection idles
        assert len(connections) == 3

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_reply_past_the_pause_threshold_arrives_whole_to_a_slow_reader(monkeypatch):
    monkeypatch.setattr(socket_io, "HIGH_WATER", 64 * 1024)
    monkeypatch.setattr(socket_io, "LOW_WATER", 16 * 1024)
    payload = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB: 64 times the threshold

    async def answer(reader, writer):
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload))
            writer.write(payload)
            await writer.drain()

    async def main():
        server, url = await serve(answer)
        async with server, httpcore.AsyncConnectionPool(network_backend=ProtocolBackend()) as pool:
            for _ in range(2):  # and the connection, its reading resumed, serves the next one
                reply = await pool.handle_async_request(request(url))
                stream = reply.extensions["network_stream"]
                await asyncio.sleep(0.2)  # the reader lags: reading pauses
                assert stream._conn.paused
                got = bytearray()
                async for chunk in reply.aiter_stream():
                    got += chunk
                    await asyncio.sleep(0)
                await reply.aclose()
                assert got == payload and not stream._conn.paused

    asyncio.run(asyncio.wait_for(main(), 20))
