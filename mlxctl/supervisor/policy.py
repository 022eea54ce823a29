"""Restart policy: capped exponential backoff, reset after stable uptime, FATAL on fast failures.

Pure arithmetic over times handed in by the caller, so tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = 1.0  # seconds before the first restart
    backoff_factor: float = 2.0
    backoff_max: float = 60.0
    stable_after: float = 60.0  # uptime after which a crash counts as fresh (backoff resets)
    max_fast_failures: int = 5  # consecutive crashes before `stable_after` -> FATAL


@dataclass
class Decision:
    delay: float | None  # seconds to wait before the next spawn; None -> FATAL
    reason: str = ""


class RestartTracker:
    """Counts consecutive fast failures and turns each exit into a delay or a FATAL verdict."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self.fast_failures = 0

    def on_exit(self, uptime: float, ever_healthy: bool = True) -> Decision:
        # A death before the first healthy answer is a fast failure like any other: retried with
        # backoff up to the cap (a worker that says it cannot load is FATAL at once, machine.py).
        policy = self.policy
        if ever_healthy and uptime >= policy.stable_after:
            self.fast_failures = 0  # a long healthy run resets the backoff
        self.fast_failures += 1
        if self.fast_failures > policy.max_fast_failures:
            return Decision(None, f"{self.fast_failures - 1} restarts in a row failed fast")
        delay = policy.backoff_initial * policy.backoff_factor ** (self.fast_failures - 1)
        return Decision(min(delay, policy.backoff_max))

    def reset(self) -> None:
        self.fast_failures = 0


# Loading reads every weight once, then warm prompts prefill: generous, but never "forever".
STARTUP_BASE_SECONDS = 300.0
STARTUP_SECONDS_PER_GIB = 30.0
STARTUP_UNKNOWN_SECONDS = 3600.0  # a hub id mlx-lm may still have to download


def auto_startup_timeout(weight_bytes: int | None) -> float:
    """`restart.startup_timeout = 0`: a limit that grows with the model's size on disk."""
    if weight_bytes is None:
        return STARTUP_UNKNOWN_SECONDS
    return STARTUP_BASE_SECONDS + STARTUP_SECONDS_PER_GIB * weight_bytes / 1024**3
