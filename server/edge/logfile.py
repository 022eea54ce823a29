"""The worker's own log file: stdout and stderr point at it, rotated and recreated in-process.

The worker never depends on a reader (a paused supervisor, a full pipe): everything it prints
goes to a file it owns. A watcher thread rotates it by size and reopens it when someone deletes
or moves it, swapping fds 1 and 2 with dup2 so every writer (logging, print, faulthandler, C
code) follows at once. A rotated file is cut back to `max_bytes`, so the log's bytes on disk stay
under max_bytes x (backups + 1) plus what one check interval lets through, whatever the rate.
Stdlib only: the supervisor cuts the copies it rotates for other workers the same way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

CHECK_SECONDS = 0.1  # two stat calls: cheap, and it bounds the overflow of the current file
FLOOD_CHECK_SECONDS = 0.01  # right after a rotation: a flood is checked ten times as often
MOVE_CHUNK = 1024 * 1024
SEEK_WINDOW = 64 * 1024  # how far a cut looks for the start of a line


def dropped_mark(dropped: int) -> bytes:
    return (
        f"--- {dropped} older bytes of output dropped here: the log grew past its size limit "
        "faster than it rotates\n"
    ).encode()


def newest_lines_start(handle: BinaryIO, size: int, budget: int) -> int:
    """Where the newest whole lines that fit in `budget` bytes begin in a file of `size`."""
    start = max(0, size - budget)
    if start == 0:
        return 0
    handle.seek(start - 1)
    head = handle.read(min(SEEK_WINDOW, size - start + 1))
    newline = head.find(b"\n")
    return start + newline if newline >= 0 else size


def cap_rotated(path: Path, max_bytes: int) -> int:
    """Keep only the newest whole lines of a rotated file (nobody writes to it now) that fit in
    `max_bytes`, under a mark saying how much went. Moved in place: no second copy on disk.
    Returns the bytes dropped."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size <= max_bytes:
            return 0
        mark = dropped_mark(size)  # the longest the number can be: the mark always fits
        start = newest_lines_start(handle, size, max(0, max_bytes - len(mark)))
        mark = dropped_mark(start)[:max_bytes]
        # Reading stays ahead of writing (start > len(mark)), so nothing unread is overwritten.
        written, read = len(mark), start
        while read < size:
            handle.seek(read)
            chunk = handle.read(min(MOVE_CHUNK, size - read))
            if not chunk:
                break
            handle.seek(written)
            handle.write(chunk)
            read += len(chunk)
            written += len(chunk)
        handle.seek(0)
        handle.write(mark)
        handle.truncate(written)
    return start


class OwnedLog:
    def __init__(self, path: str | Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock = threading.Lock()
        self.reopened = 0  # times the file had vanished and was recreated
        self.dropped = 0  # bytes cut from rotated files that had grown past max_bytes
        self._point_stdio()

    def _point_stdio(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def check(self) -> bool:
        """Rotate when over size; reopen when the path no longer names our file. Never raises.
        True when it rotated."""
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
                    return True
            except OSError:
                pass  # a full or read-only disk costs log lines, never the worker
            return False

    def _rotate(self) -> None:
        name = self.path.name
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
            self._point_stdio()
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{name}.{index + 1}"))
        newest = self.path.with_name(f"{name}.1")
        os.replace(self.path, newest)
        self._point_stdio()
        # After the swap: only writes that raced the dup2 can still land in it.
        self.dropped += cap_rotated(newest, self.max_bytes)

    def watch(self) -> threading.Thread:
        def loop() -> None:
            wait = threading.Event().wait
            rotated = False
            while True:
                wait(FLOOD_CHECK_SECONDS if rotated else CHECK_SECONDS)
                rotated = self.check()

        thread = threading.Thread(target=loop, name="log-file", daemon=True)
        thread.start()
        return thread
