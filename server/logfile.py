"""The worker's own log file: stdout and stderr point at it, rotated and recreated in-process.

The worker never depends on a reader (a paused supervisor, a full pipe): everything it prints
goes to a file it owns. A watcher thread rotates it by size and reopens it when someone deletes
or moves it, swapping fds 1 and 2 with dup2 so every writer (logging, print, faulthandler, C
code) follows at once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CHECK_SECONDS = 0.5


class OwnedLog:
    def __init__(self, path: str | Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock = threading.Lock()
        self.reopened = 0  # times the file had vanished and was recreated
        self._point_stdio()

    def _point_stdio(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def check(self) -> None:
        """Rotate when over size; reopen when the path no longer names our file. Never raises."""
        with self.lock:
            try:
                ours = os.fstat(1)
                try:
                    there = os.stat(self.path)
                except FileNotFoundError:
                    there = None
                if there is None or there.st_ino != ours.st_ino or there.st_dev != ours.st_dev:
                    self.reopened += 1
                    self._point_stdio()
                    os.write(2, b"--- log file was removed or moved; reopened\n")
                elif there.st_size >= self.max_bytes:
                    self._rotate()
            except OSError:
                pass  # a full or read-only disk costs log lines, never the worker

    def _rotate(self) -> None:
        name = self.path.name
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{name}.1"))
        self._point_stdio()

    def watch(self) -> threading.Thread:
        def loop() -> None:
            while True:
                threading.Event().wait(CHECK_SECONDS)
                self.check()

        thread = threading.Thread(target=loop, name="log-file", daemon=True)
        thread.start()
        return thread
