"""Where the worker's output goes: straight into `worker.log`, never through a pipe we must read.

A worker we launch with `--log-file` rotates and recreates the file itself. Any other command
(an external release, a test override) writes to the same file through an O_APPEND fd; we rotate
that one by copy and truncate, which an O_APPEND writer follows without reopening.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from server import contract

KEEP_EVERY = 0.5  # seconds between size/existence checks


class WorkerOutput:
    def __init__(self, path: Path, max_bytes: int, backups: int, log: Callable[[str], None]):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.log = log
        self.worker_owns = False
        self.next_check = 0.0

    def open_for(self, argv: list[str]) -> int:
        """An fd for the worker's stdout and stderr (the caller closes its copy after spawning)."""
        self.worker_owns = contract.LOG_FILE_FLAG in argv
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def mark(self, line: str) -> None:
        """One line of ours in the worker's log; a failure costs the line, nothing else."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            self.log(f"could not write to {self.path}: {exc}")

    def keep(self, now: float) -> None:
        """Rotate or recreate the log of a worker that cannot do it itself. Never raises."""
        if self.worker_owns or now < self.next_check:
            return
        self.next_check = now + KEEP_EVERY
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            self.mark("--- mlxctl: worker.log was removed; recreated")
            self.log(
                f"{self.path} was removed; recreated it (this worker keeps writing to the"
                " removed file until it restarts)"
            )
            return
        except OSError:
            return
        if size >= self.max_bytes:
            try:
                self._copy_truncate()
            except OSError as exc:
                self.log(f"could not rotate {self.path}: {exc}")

    def _copy_truncate(self) -> None:
        name = self.path.name
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{name}.{index + 1}"))
            shutil.copyfile(self.path, self.path.with_name(f"{name}.1"))
        os.truncate(self.path, 0)
