"""Where each model's requests go: the supervisor writes, the front door reads (two threads).

Keyed by model name so several models can be served by name; today one entry serves them all.
A route is live (a worker's private URL), held (a worker is coming: requests wait) or down
(none is coming: requests get a 503). The table also counts requests in flight per worker URL,
so a switch lets the old worker finish what it serves before it is stopped.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT = ""  # the one entry of a single-model service


@dataclass(frozen=True)
class Route:
    url: str | None = None  # the live worker's base URL (private loopback port)
    down: str | None = None  # why no worker is coming; None while one is live or coming

    @property
    def held(self) -> bool:
        return self.url is None and self.down is None


HELD = Route()


class RouteTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {DEFAULT: HELD}
        self._in_flight: Counter[str] = Counter()

    def set(self, route: Route, model: str = DEFAULT) -> None:
        with self._lock:
            self._routes[model] = route

    def get(self, model: str | None = None) -> Route:
        with self._lock:
            return self._routes.get(model or DEFAULT) or self._routes[DEFAULT]

    @contextmanager
    def serving(self, url: str) -> Iterator[None]:
        with self._lock:
            self._in_flight[url] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[url] -= 1
                if self._in_flight[url] <= 0:
                    del self._in_flight[url]

    def in_flight(self, url: str) -> int:
        with self._lock:
            return self._in_flight.get(url, 0)
