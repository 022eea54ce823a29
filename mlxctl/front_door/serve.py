"""The front door on its own thread and event loop inside the supervisor daemon.

A thread, not a child process: the supervisor flips the route table in memory at the moment a
worker becomes live or goes, with no message to lose, and the door lives exactly as long as the
supervisor that owns the address.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from mlxctl.errors import PortInUseError
from mlxctl.front_door.guard import Guard
from mlxctl.front_door.proxy import FrontDoorApp
from mlxctl.front_door.routes import RouteTable
from mlxctl.system.processes import port_in_use
from server.edge.hosts import is_loopback

START_SECONDS = 10.0
HTTP = "h11"  # httptools measured no better here (bench/front_door.py compares them)
# asyncio's loop: uvloop took 4 to 22% off the door's CPU per stream over nine runs, none off a
# plain request and no clear time off either, which did not earn a dependency.
LOOP = "asyncio"


class FrontDoor:
    def __init__(self, host: str, port: int, guard: Guard, hold_seconds: float, http: str = HTTP,
                 loop: str = LOOP):  # fmt: skip
        self.host, self.port = host, port
        self.routes = RouteTable()
        self.app = FrontDoorApp(self.routes, guard, hold_seconds)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            lifespan="on",
            http=http,  # bench/front_door.py compares the parsers and the loops
            loop=loop,
            log_level="warning",
            access_log=False,
            server_header=False,  # the worker's own headers pass through
            date_header=False,
            ws="none",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the address (PortInUseError when taken), then serve from a thread."""
        sock = self._bind()
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="front-door", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self.server.started and self.thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)

    def _bind(self) -> socket.socket:
        # Proto IPPROTO_TCP, not uvicorn's 0: asyncio sets TCP_NODELAY only on such sockets, and
        # without it each streamed chunk waits out a delayed ACK (40 ms a request, measured).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise port_in_use(self.port) from None
        sock.set_inheritable(True)
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)


def open_front_door(settings: dict, host: str, port: int, hold_seconds: float) -> FrontDoor:
    """The service's address, served; PortInUseError when it is taken or may not be served."""
    if not is_loopback(host) and not settings["api_key"]:
        raise PortInUseError(
            f"refusing to serve on {host} without an API key (set api_key, or bind 127.0.0.1)"
        )
    allowed = tuple(h.strip() for h in (settings["allowed_hosts"] or "").split(",") if h.strip())
    door = FrontDoor(host, port, Guard(settings["api_key"], host, allowed), hold_seconds)
    door.start()
    return door
