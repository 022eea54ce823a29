"""Tokens drafted and accepted: one record per request, totals for the worker, the recent few
(read from any thread: plain Python values)."""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass

RECENT = 16


@dataclass
class DraftRecord:
    source: str  # "copy"; "off" where the request decoded plainly
    drafted: int = 0
    accepted: int = 0
    verify_steps: int = 0
    verified_tokens: int = 0  # tokens the verify steps gave (accepted drafts and the model's own)
    copied: int = 0  # drafts a draft model's source took from copies of the context instead
    draft_reused: int = 0  # context tokens the draft model's cache held from an earlier request
    draft_prefilled: int = 0  # context tokens the draft model prefilled when the reply began

    @property
    def tokens_per_step(self) -> float:
        return self.verified_tokens / self.verify_steps if self.verify_steps else 0.0

    def summary(self) -> dict:
        return {**asdict(self), "tokens_per_step": round(self.tokens_per_step, 2)}


class DraftStats:
    """The worker's drafting figures: totals since start and the last requests that decoded
    alone (batched ones never draft)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.total = DraftRecord("all")
        self.recent: collections.deque[tuple[str, DraftRecord]] = collections.deque(maxlen=RECENT)
        self._lock = threading.Lock()

    def add(self, request_id: str, record: DraftRecord) -> None:
        with self._lock:
            t = self.total
            t.drafted += record.drafted
            t.accepted += record.accepted
            t.verify_steps += record.verify_steps
            t.verified_tokens += record.verified_tokens
            self.recent.append((request_id, record))

    def status(self, costs: dict[str, float] | None = None) -> dict:
        with self._lock:
            total = self.total.summary()
            recent = [{"request_id": rid, **r.summary()} for rid, r in self.recent]
        total.pop("source")
        return {"mode": self.mode, **total, "cost_ratios": costs or {}, "recent": recent}
