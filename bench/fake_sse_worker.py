"""A stand-in worker for measuring the front door alone: no model, no engine, stdlib only.

    python bench/fake_sse_worker.py PORT

Every POST is answered with an OpenAI-shaped SSE stream of `max_tokens` events (128 without
one), 1 ms apart as a fast model would send them, on a keep-alive connection. What a client
measures through a door in front of it beside a direct connection is then the door's own cost,
free of a model's time and the swings a model's CPU use brings on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

EVENT = (b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
         b'"delta":{"content":"tok"}}]}\n\n')  # fmt: skip
DONE = b"data: [DONE]\n\n"
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            said = json.loads(body) if body else {}
            writer.write(HEAD)
            for _ in range(int(said.get("max_tokens") or 128)):
                writer.write(chunk(EVENT))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(chunk(DONE) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(answer, "127.0.0.1", port)
    for sock in server.sockets:  # each event leaves at once, as the worker's do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
