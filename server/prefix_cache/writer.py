"""Write-behind: new and grown RAM entries reach the disk tier on a background thread.

A store pokes the writer; it waits `delay` seconds so a conversation that grows every few
seconds is written once per window (its newest version only: a superseded entry has left RAM),
then writes the dirty entries most recent first. Entries are evaluated, contiguous arrays made
on the generation thread, so the writer only serializes and does file I/O.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("server.cache")


class WriteBehind:
    def __init__(self, write_dirty: Callable[[threading.Event], int], delay: float):
        self.delay = delay
        self._write_dirty = write_dirty
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kv-write-behind", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._poked.set()

    def stop(self, timeout: float) -> bool:
        """Stop after the write in progress; False when it is still writing after `timeout`."""
        self._stop.set()
        self._poked.set()
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
