"""Request and token counters, shared by /v1/status and the Prometheus /metrics endpoint."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by endpoint
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.stream_errors = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.generation_seconds = 0.0

    def request_done(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[endpoint] += 1
            self.statuses[status] += 1
            if status >= 400:
                self.errors += 1

    def generation_done(
        self, prompt: int, cached: int, completion: int, seconds: float, cancelled: bool
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.cached_tokens += cached
            self.completion_tokens += completion
            self.generation_seconds += seconds
            self.cancelled += int(cancelled)

    def stream_failed(self) -> None:
        with self._lock:
            self.stream_errors += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "total": sum(self.requests.values()),
                "errors": self.errors,
                "stream_errors": self.stream_errors,
                "cancelled": self.cancelled,
                "by_endpoint": dict(self.requests),
                "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
                "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens,
                "generation_seconds": round(self.generation_seconds, 3),
            }


SPECULATIVE = (  # /v1/status scheduler.speculative key, metric, kind, help
    ("drafted", "speculative_drafted_tokens_total", "counter", "Draft tokens verified."),
    ("accepted", "speculative_accepted_drafts_total", "counter", "Draft tokens accepted."),
    ("verify_steps", "speculative_verify_steps_total", "counter", "Verify forwards run."),
    ("tokens_per_step", "speculative_tokens_per_verify", "gauge", "Tokens per verify step."),
)


def prometheus_text(
    snap: dict, gauges: dict[str, float], cache: dict | None, speculative: dict | None = None
) -> str:
    """Prometheus text exposition (version 0.0.4) of a snapshot plus gauges."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]):
        lines.append(f"# HELP mlxctl_{name} {help_text}")
        lines.append(f"# TYPE mlxctl_{name} {kind}")
        for labels, value in samples:
            lines.append(f"mlxctl_{name}{labels} {value}")

    metric(
        "requests_total",
        "counter",
        "HTTP requests by endpoint.",
        [(f'{{endpoint="{k}"}}', v) for k, v in sorted(snap["by_endpoint"].items())] or [("", 0)],
    )
    metric(
        "request_errors_total", "counter", "Responses with status >= 400.", [("", snap["errors"])]
    )
    metric(
        "stream_errors_total",
        "counter",
        "Streams ended by an error event.",
        [("", snap["stream_errors"])],
    )
    metric(
        "cancelled_total",
        "counter",
        "Generations stopped by a client disconnect.",
        [("", snap["cancelled"])],
    )
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens processed or reused.",
        [("", snap["prompt_tokens"])],
    )
    metric(
        "cached_tokens_total",
        "counter",
        "Prompt tokens served from the prefix cache.",
        [("", snap["cached_tokens"])],
    )
    metric(
        "completion_tokens_total", "counter", "Generated tokens.", [("", snap["completion_tokens"])]
    )
    for name, value in gauges.items():
        metric(name, "gauge", name.replace("_", " ") + ".", [("", value)])
    for key, name, kind, help_text in SPECULATIVE if speculative else ():
        metric(name, kind, help_text, [("", (speculative or {}).get(key, 0))])
    for name, value in _flat(cache or {}):
        metric(f"cache_{name}", "gauge", f"prefix cache {name.replace('_', ' ')}.", [("", value)])
    return "\n".join(lines) + "\n"


def _flat(stats: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Numeric values of nested stats as (name, value), e.g. ram.bytes -> ram_bytes."""
    out = []
    for key, value in stats.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append((prefix + key, value))
    return out
