"""The progress watchdog: a busy generation thread must advance a token or a prefill chunk
within a deadline, or the worker says it is stuck (`/health` 503) and dumps every thread's stack.

`/health` answering 200 while generation hangs is the outage this catches (a native deadlock
inside a step): the HTTP side stays up, only the generation thread stops.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("server.watchdog")
# Test-only: block the generation thread for good at this progress beat (tests/ set it).
HANG_ENV = "MLXCTL_TEST_HANG_AT_BEAT"
# Test-only: the generation thread dies at this beat (an error no guard catches).
DIE_ENV = "MLXCTL_TEST_DIE_AT_BEAT"


class TestDeath(BaseException):
    """What the DIE_ENV hook raises: past every `except Exception` on the thread."""


class Watchdog:
    def __init__(self, deadline_s: float, check_every: float = 1.0):
        self.deadline_s = deadline_s  # 0: off
        self.check_every = check_every
        self.busy: str | None = None  # what the generation thread is doing, None when idle
        self.last_beat = time.monotonic()
        self.stuck: str | None = None  # the reason, once the deadline passed
        self.beats = 0
        hang = os.environ.get(HANG_ENV, "")
        self._hang_at = int(hang) if hang.isdigit() else None
        die = os.environ.get(DIE_ENV, "")
        self._die_at = int(die) if die.isdigit() else None

    def begin(self, what: str) -> None:
        self.last_beat = time.monotonic()
        self.busy = what

    def beating(self, progress: Callable[[int], None]) -> Callable[[int], None]:
        """`progress`, with a beat before each call (a prefill chunk's callback)."""

        def beat_then(done: int) -> None:
            self.beat()
            progress(done)

        return beat_then

    def beat(self) -> None:
        """One token decoded or one prefill chunk done."""
        self.beats += 1
        if self._hang_at is not None and self.beats >= self._hang_at:
            log.warning("test hook %s: blocking the generation thread", HANG_ENV)
            threading.Event().wait()  # never set: a step that never returns
        if self._die_at is not None and self.beats >= self._die_at:
            raise TestDeath(f"test hook {DIE_ENV}")
        self.last_beat = time.monotonic()
        self.stuck = None

    def end(self) -> None:
        self.busy = None

    def check(self) -> str | None:
        """The stuck reason when the busy thread missed its deadline (dumps stacks once)."""
        busy = self.busy
        if not self.deadline_s or busy is None:
            return None
        silent = time.monotonic() - self.last_beat
        if silent < self.deadline_s:
            return None
        if self.stuck is None:
            self.stuck = f"generation made no progress for {silent:.0f}s ({busy})"
            log.error("watchdog: %s; thread stacks follow", self.stuck)
            faulthandler.dump_traceback(all_threads=True)  # fd 2: the worker's log
        return self.stuck

    def watch(self) -> threading.Thread | None:
        """Check on a thread of its own, so the stacks are dumped even if nobody probes."""
        if not self.deadline_s:
            return None

        def loop() -> None:
            while True:
                time.sleep(self.check_every)
                self.check()

        thread = threading.Thread(target=loop, name="watchdog", daemon=True)
        thread.start()
        return thread
