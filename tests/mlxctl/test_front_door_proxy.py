"""The front door in process: a real uvicorn door and a small upstream app, real HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route as Path

from mlxctl.front_door.guard import Guard
from mlxctl.front_door.routes import HELD, Route
from mlxctl.front_door.serve import FrontDoor
from mlxctl.system.processes import free_port

KEY = "sekrit"


async def chat(request: Request):
    body = await request.json()
    seen = {"host": request.headers.get("host"), "key": request.headers.get("x-api-key"),
            "query": request.url.query, "peer": request.client and request.client.port}  # fmt: skip
    return JSONResponse({"echo": body, "seen": seen})


async def messages(request: Request):
    async def events():
        for word in ("one", "two"):
            yield f'event: content_block_delta\ndata: {{"text": "{word}"}}\n\n'

    return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def upstream():
    app = Starlette(routes=[
        Path("/v1/chat/completions", chat, methods=["POST"]),
        Path("/v1/messages", messages, methods=["POST"]),
    ])  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def door():
    made = FrontDoor("127.0.0.1", free_port(), Guard(KEY, "127.0.0.1"), hold_seconds=30)
    made.app.keep_alive_seconds = 0.1
    made.start()
    made.url = f"http://127.0.0.1:{made.port}"
    yield made
    made.stop()


def go_live_later(door, url: str, after: float = 0.5) -> None:
    threading.Timer(after, lambda: door.routes.set(Route(url=url))).start()


HEADERS = {"x-api-key": KEY}


def test_a_held_stream_gets_pings_then_the_workers_events(door, upstream):
    go_live_later(door, upstream)
    body = {"model": "m", "stream": True, "max_tokens": 5, "messages": []}
    with httpx.stream("POST", f"{door.url}/v1/messages", json=body, headers=HEADERS) as reply:
        assert reply.status_code == 200
        text = "".join(reply.iter_text())
    pings = text.split("event: content_block_delta")[0]
    assert pings.count('event: ping\ndata: {"type": "ping"}') >= 2
    assert text.endswith('event: content_block_delta\ndata: {"text": "two"}\n\n')


def test_a_held_request_waits_and_the_worker_sees_its_own_address(door, upstream):
    go_live_later(door, upstream)
    reply = httpx.post(f"{door.url}/v1/chat/completions", json={"a": 1}, headers=HEADERS)
    assert reply.status_code == 200
    said = reply.json()
    assert said["echo"] == {"a": 1} and said["seen"]["key"] == KEY  # the worker checks it too
    assert said["seen"]["host"] == upstream.removeprefix("http://")


def test_the_key_and_host_are_checked_at_the_door_in_the_protocols_shape(door):
    door.routes.set(HELD)  # refused at once, not held
    reply = httpx.post(f"{door.url}/v1/messages", json={}, timeout=5)
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    spoofed = {**HEADERS, "host": "evil.example"}
    reply = httpx.post(f"{door.url}/v1/chat/completions", json={}, headers=spoofed, timeout=5)
    assert reply.status_code == 403 and "evil.example" in reply.json()["error"]["message"]


def test_no_worker_coming_is_a_503_and_a_closed_port_is_tried_again(door, upstream):
    door.routes.set(Route(down="the service is stopping"))
    reply = httpx.post(f"{door.url}/v1/chat/completions", json={}, headers=HEADERS, timeout=5)
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "service_unavailable"
    door.routes.set(Route(url=f"http://127.0.0.1:{free_port()}"))  # a worker that just died
    go_live_later(door, upstream)
    reply = httpx.post(f"{door.url}/v1/chat/completions", json={"b": 2}, headers=HEADERS)
    assert reply.status_code == 200 and reply.json()["echo"] == {"b": 2}


def test_requests_in_turn_share_one_upstream_connection_and_keep_their_query(door, upstream):
    door.routes.set(Route(url=upstream))
    with httpx.Client(headers=HEADERS) as client:
        seen = [client.post(f"{door.url}/v1/chat/completions?n={n}", json={"n": n}).json()
                for n in range(6)]  # fmt: skip
    assert [said["echo"] for said in seen] == [{"n": n} for n in range(6)]
    assert [said["seen"]["query"] for said in seen] == [f"n={n}" for n in range(6)]
    # An answer's end is no client leaving: its connection goes back to the pool, reused.
    assert len({said["seen"]["peer"] for said in seen}) == 1
