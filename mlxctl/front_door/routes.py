"""Where each model's requests go: the supervisor writes, the front door reads (two threads).

Keyed by model name (`[models.NAME]`; "" is the default model). A route is live (a worker's
private URL), held (a worker is coming: requests wait), asleep (no worker: a request wants one,
and waits) or down (none is coming: requests get a 503). A want the supervisor cannot grant (no
memory) is refused by ticket, so exactly the requests that waited for it get the error. The
table also counts requests in flight per worker URL (a switch lets the old worker finish what it
serves) and, per model, the last use and requests served (idle unload, least recently used).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT = ""  # the one entry of a single-model service


@dataclass(frozen=True)
class Route:
    url: str | None = None  # the live worker's base URL (private loopback port)
    down: str | None = None  # why no worker is coming; None while one is live or coming
    asleep: bool = False  # no worker until a request wants one
    state: str = ""  # what `/v1/models` and `status` call it: running, starting, idle-unloaded...

    @property
    def held(self) -> bool:
        return self.url is None and self.down is None and not self.asleep


HELD = Route()


class RouteTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {DEFAULT: HELD}
        self._in_flight: Counter[str] = Counter()
        self._busy: Counter[str] = Counter()  # requests in flight per model
        self._last_used: dict[str, float] = {}  # per model, time.monotonic()
        self._served: Counter[str] = Counter()
        self._tickets = 0
        self._wants: dict[str, int] = {}  # model -> the latest ticket not yet taken
        self._refused: dict[str, tuple[int, str]] = {}  # model -> (up to ticket, why)

    def set(self, route: Route, model: str = DEFAULT) -> None:
        with self._lock:
            self._routes[model] = route

    def get(self, model: str | None = None) -> Route:
        with self._lock:
            return self._routes.get(model or DEFAULT) or self._routes[DEFAULT]

    def routes(self) -> dict[str, Route]:
        with self._lock:
            return dict(self._routes)

    @contextmanager
    def serving(self, url: str, model: str = DEFAULT) -> Iterator[None]:
        with self._lock:
            self._in_flight[url] += 1
            self._busy[model] += 1
            self._served[model] += 1
            self._last_used[model] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[url] -= 1
                if self._in_flight[url] <= 0:
                    del self._in_flight[url]
                self._busy[model] -= 1
                self._last_used[model] = time.monotonic()

    def usage(self, model: str) -> tuple[int, float | None, int]:
        """(requests in flight, last use in time.monotonic() or None, requests served)."""
        with self._lock:
            return self._busy[model], self._last_used.get(model), self._served[model]

    # -- a model started on its first request ----------------------------------------------------

    def want(self, model: str) -> int:
        """A request needs `model` started; its ticket tells a later refusal apart."""
        with self._lock:
            self._tickets += 1
            self._wants[model] = self._tickets
            return self._tickets

    def take_wants(self) -> dict[str, int]:
        with self._lock:
            wants, self._wants = self._wants, {}
            return wants

    def refuse(self, model: str, why: str, ticket: int) -> None:
        """Every want of `model` up to `ticket` gets `why` (the supervisor cannot start it)."""
        with self._lock:
            self._refused[model] = (ticket, why)

    def refusal(self, model: str, ticket: int) -> str | None:
        with self._lock:
            upto, why = self._refused.get(model, (0, ""))
            return why if ticket <= upto else None

    def in_flight(self, url: str) -> int:
        with self._lock:
            return self._in_flight.get(url, 0)
