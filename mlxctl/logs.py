"""Log files: size-based rotation with bounded backups, tail, and follow across rotations."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path


class RotatingWriter:
    """Appends lines to `path`; at `max_bytes` renames it to `.1` (`.1` -> `.2`, ...)."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        on_rotate: Callable[[int], None] | None = None,
    ):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_rotate = on_rotate  # gets the new file's fd (the daemon points stderr at it)
        self.lock = threading.Lock()
        self.dropped = 0  # lines lost to an unwritable file
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "ab")  # noqa: SIM115 (lives as long as the writer)

    def write_line(self, line: str) -> None:
        """Append one line; never raises (logging must not take the caller down)."""
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        with self.lock:
            try:
                if self._vanished():
                    self._reopen()  # deleted or moved by someone else: start a new file
                self.handle.write(data)
                self.handle.flush()
                if self.handle.tell() >= self.max_bytes:
                    self._rotate()
            except (OSError, ValueError):
                self.dropped += 1

    def _vanished(self) -> bool:
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return True
        ours = os.fstat(self.handle.fileno())
        return (there.st_ino, there.st_dev) != (ours.st_ino, ours.st_dev)

    def _rotate(self) -> None:
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._reopen()

    def _reopen(self) -> None:
        old, self.handle = self.handle, open(self.path, "ab")  # noqa: SIM115
        old.close()
        if self.on_rotate:
            self.on_rotate(self.handle.fileno())

    def close(self) -> None:
        with self.lock:
            self.handle.close()


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of the log at `path`, continued into its rotated files (`path.1`,
    `path.2`, ...) while the newer ones hold fewer."""
    recent = _tail_of(path, lines)
    index = 1
    while lines > 0 and len(recent) < lines:
        older = path.with_name(f"{path.name}.{index}")
        if not older.exists():
            break
        recent = _tail_of(older, lines - len(recent)) + recent
        index += 1
    return recent


def _tail_of(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of one file (none when it does not exist)."""
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            # Read backwards in blocks until enough newlines are in hand.
            block, data = 64 * 1024, b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                handle.seek(size)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return list(deque(text, maxlen=lines))


def last_line(path: Path) -> str:
    found = [line for line in tail(path, 5) if line.strip()]
    return found[-1] if found else ""


def follow(path: Path, poll: float = 0.2, from_end: bool = True) -> Iterator[str]:
    """Yield lines appended to `path` forever, reopening it when it is rotated or truncated."""
    handle = None
    inode = None
    pending = b""
    while True:
        if handle is None:
            try:
                handle = open(path, "rb")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
                if from_end:
                    handle.seek(0, os.SEEK_END)
                from_end = False  # after a rotation the new file is read from its start
            except FileNotFoundError:
                time.sleep(poll)
                continue
        chunk = handle.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", "replace")
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != inode:
            # Rotated: the old file is drained above, so switch to the new one.
            if current is not None:
                pending += handle.read()  # lines written just before the rename
                for raw in pending.split(b"\n") if pending else []:
                    if raw:
                        yield raw.decode("utf-8", "replace")
                pending = b""
                handle.close()
                handle = None
            time.sleep(poll if current is None else 0)
            continue
        if current.st_size < handle.tell():
            handle.seek(0)  # truncated in place
            continue
        time.sleep(poll)
