"""A stand-in worker for measuring the front door alone: no model, no engine, stdlib only.

    python bench/fake_sse_worker.py PORT

A streamed POST is answered with an OpenAI-shaped SSE stream of `max_tokens` events (128 without
one), 1 ms apart as a fast model would send them, on a keep-alive connection; asked with
`x-mlxctl-resumable: 1` (the door asks it of every chat POST) each event follows its token mark
in the same write, as the real worker writes them. Any other POST gets one JSON completion. What
a client measures through a door in front of it beside a direct connection is then the door's own
cost, free of a model's time and the swings a model's CPU use brings on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

EVENT = (b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
         b'"delta":{"content":"tok"}}]}\n\n')  # fmt: skip
DONE = b"data: [DONE]\n\n"
COMPLETION = (b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":'
              b'{"role":"assistant","content":"tok"},"finish_reason":"length"}]}')  # fmt: skip
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
MARKED = b"x-mlxctl-resumable: 1"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, marked = 0, False
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                marked = marked or line.lower() == MARKED
            body = await reader.readexactly(length) if length else b""
            said = json.loads(body) if body else {}
            if said.get("stream") is not True:
                writer.write(JSON_HEAD % len(COMPLETION) + COMPLETION)
                await writer.drain()
                continue
            writer.write(HEAD)
            for token in range(int(said.get("max_tokens") or 128)):
                mark = b": mlxctl-tokens %d\n\n" % token if marked else b""
                writer.write(chunk(mark + EVENT))
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
