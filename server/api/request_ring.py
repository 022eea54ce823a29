"""The last few generations, kept for `mlxctl status` ("recent" in /v1/status) and `cache why`.

Each entry holds the request's figures and what `cache why` needs to name where its prompt left
the cache: the request, its rendered text and its token ids (compact, as an array). The ring is
small and bounded, so a long session costs a few megabytes at most.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field

from server.request import ChatRequest

RING_SIZE = 16
RECENT_ROWS = 8  # how many rows /v1/status reports


@dataclass(eq=False)
class Recorded:
    id: str
    protocol: str  # "anthropic", "openai" or "responses"
    stats: dict  # serving.stats(): prompt, cached, completion, ttft_ms, tps, finish
    request: ChatRequest | None = None
    text: str = ""
    tokens: array = field(default_factory=lambda: array("I"))
    at: float = field(default_factory=time.time)

    def row(self) -> dict:
        """The public figures, in the keys /v1/status documents under "recent"."""
        s = self.stats
        return {
            "id": self.id,
            "time": round(self.at, 3),
            "protocol": self.protocol,
            "prompt_tokens": s.get("prompt"),
            "cached_tokens": s.get("cached"),
            "completion_tokens": s.get("completion"),
            "ttft_ms": s.get("ttft_ms"),
            "tokens_per_second": s.get("tps"),
            "finish": s.get("finish"),
            # Speculative decoding, where the reply decoded alone: source, drafts, per verify.
            **({"drafts": {k: s[k] for k in DRAFT_KEYS}} if "drafted" in s else {}),
        }


DRAFT_KEYS = ("draft", "drafted", "accepted", "per_step")


class RequestRing:
    """A bounded, thread-safe ring of Recorded generations, newest last."""

    def __init__(self, size: int = RING_SIZE):
        self._items: deque[Recorded] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self._items.append(entry)

    def recent(self, count: int = RECENT_ROWS) -> list[dict]:
        """The newest `count` rows, newest first."""
        with self._lock:
            items = list(self._items)[-count:]
        return [e.row() for e in reversed(items)]

    def find(self, request_id: str | None = None) -> Recorded | None:
        """The entry of `request_id` (a unique prefix is enough), or the newest with None."""
        with self._lock:
            items = list(self._items)
        if request_id is None:
            return items[-1] if items else None
        matches = [e for e in items if e.id.startswith(request_id)]
        return matches[-1] if matches else None

    def before(self, entry: Recorded) -> list[Recorded]:
        """The entries recorded before `entry`, newest first."""
        with self._lock:
            items = list(self._items)
        index = next((i for i, e in enumerate(items) if e is entry), 0)
        return list(reversed(items[:index]))
