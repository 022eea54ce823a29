"""Write-behind: new and grown RAM entries reach the disk tier on a background thread.

A store pokes the writer; it waits `delay` seconds so a conversation that grows every few
seconds is written once per window (its newest version only: a superseded entry has left RAM),
then writes the dirty entries most recent first. Entries are evaluated, contiguous arrays made
on the generation thread, so the writer only serializes and does file I/O.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("server.cache")
# Test-only: the write-behind dwells this many seconds on each entry it writes (a slow disk).
SLOW_ENV = "MLXCTL_TEST_SLOW_WRITE_BEHIND_S"


def test_dwell() -> None:
    """The SLOW_ENV hook, called by the write-behind pass with its entry claimed."""
    seconds = float(os.environ.get(SLOW_ENV) or 0)
    if seconds > 0:
        log.warning("test hook %s: the write-behind dwells %gs on an entry", SLOW_ENV, seconds)
        time.sleep(seconds)


class WriteBehind:
    def __init__(
        self,
        write_dirty: Callable[[threading.Event], int],
        delay: float,
        bytes_per_hour: int | None = None,
    ):
        self.delay = delay
        # SSD wear: past this many bytes in the last hour, entries wait for the stop's flush.
        self.bytes_per_hour = bytes_per_hour
        self._recent: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) written
        self._write_dirty = write_dirty
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kv-write-behind", daemon=True)
        self._thread.start()

    def allow(self, nbytes: int) -> bool:
        """Whether writing `nbytes` now stays within the hourly budget; counts it if so."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - 3600:
            self._recent.popleft()
        spent = sum(b for _, b in self._recent)
        if self.bytes_per_hour is not None and spent + nbytes > self.bytes_per_hour:
            return False
        self._recent.append((now, nbytes))
        return True

    def poke(self) -> None:
        self._poked.set()

    def stop(self, timeout: float) -> bool:
        """Stop after the write in progress; False when it is still writing after `timeout`."""
        self.stop_soon()
        return self.join(timeout)

    def stop_soon(self) -> None:
        """Take no new entry (the one being written finishes)."""
        self._stop.set()
        self._poked.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poked.wait()
            # Coalesce: whatever arrives during the delay goes out in this one pass.
            if self._stop.wait(self.delay):
                return
            self._poked.clear()
            try:
                self._write_dirty(self._stop)
            except Exception:  # the cache is optional: never let the writer die silently
                log.exception("kv cache: write-behind failed")
