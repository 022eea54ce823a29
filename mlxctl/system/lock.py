"""Advisory file locks (flock): held for a process's lifetime, released by the kernel on death."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path


class FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except BlockingIOError:
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    os.close(fd)
                    return False
                time.sleep(0.02)

    def record_owner(self, owner: dict) -> None:
        """Write who holds the lock into its file, so a reader can find the holder without any
        other file (the state file may be damaged)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(owner).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether some process holds the lock at `path` right now."""
    probe = FileLock(path)
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True


def holder(path: Path) -> dict | None:
    """What the lock's holder recorded (`record_owner`), when the lock is held; else None."""
    if not is_held(path):
        return None
    try:
        owner = json.loads(path.read_bytes() or b"null")
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None
