"""Where the worker's output goes: straight into `worker.log`, never through a pipe we must read.

A worker we launch with `--log-file` rotates and recreates the file itself. Any other command
(an external release, a test override) writes to the same file through an O_APPEND fd; a keeper
thread rotates that one by copy and truncate (an O_APPEND writer follows a truncation without
reopening), off the supervision loop, copying at most `max_bytes`: the newest ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from server.edge import contract, logfile

KEEP_EVERY = 0.1  # seconds between size/existence checks
FLOOD_KEEP_EVERY = 0.01  # right after a rotation: a flood is checked ten times as often
COPY_CHUNK = 1024 * 1024
MARK_PREFIX = "--- mlxctl:"  # how our own lines in the worker's log begin
SPAWN_MARK = f"{MARK_PREFIX} starting the worker for"  # where each run starts in a worker's log


class WorkerOutput:
    def __init__(self, path: Path, max_bytes: int, backups: int, log: Callable[[str], None]):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.log = log
        self.worker_owns = False
        self.dropped = 0  # bytes over max_bytes left out of rotated copies
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def tail(self, lines: int = 3, window: int = 16384) -> str:
        """The newest lines since the latest mark of ours, joined: a failed start's last words."""
        try:
            with open(self.path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - window))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        newest = text.rsplit(MARK_PREFIX, 1)[-1].splitlines()[1:] if MARK_PREFIX in text else []
        said = [line.strip() for line in newest if line.strip()]
        return " | ".join(said[-lines:])

    # -- the keeper thread: log work never blocks supervision --------------------------------

    def start_keeper(self) -> threading.Thread:
        def loop() -> None:
            rotated = False
            while not self._stop.wait(FLOOD_KEEP_EVERY if rotated else KEEP_EVERY):
                rotated = self.keep()

        self._thread = threading.Thread(target=loop, name="worker-log-keeper", daemon=True)
        self._thread.start()
        return self._thread

    def stop_keeper(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def keep(self) -> bool:
        """Rotate or recreate the log of a worker that cannot do it itself. Never raises; True
        when it rotated."""
        if self.worker_owns:
            return False
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            self.mark("--- mlxctl: worker.log was removed; recreated")
            self.log(
                f"{self.path} was removed; recreated it (this worker keeps writing to the"
                " removed file until it restarts)"
            )
            return False
        except OSError:
            return False
        if size < self.max_bytes:
            return False
        try:
            self._copy_truncate()
        except OSError as exc:
            self.log(f"could not rotate {self.path}: {exc}")
            return False
        return True

    def _copy_truncate(self) -> None:
        name = self.path.name
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{name}.{index + 1}"))
            self.dropped += copy_newest(self.path, self.path.with_name(f"{name}.1"), self.max_bytes)
        os.truncate(self.path, 0)


def copy_newest(source: Path, target: Path, max_bytes: int) -> int:
    """Copy the newest whole lines of `source` that fit in `max_bytes` into `target`, under a
    mark saying what was left out (as the worker cuts its own). Returns the bytes left out."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = src.seek(0, os.SEEK_END)  # what arrives while we copy is lost to the truncation
        budget = max_bytes - len(logfile.dropped_mark(size)) if size > max_bytes else size
        start = logfile.newest_lines_start(src, size, max(0, budget))
        if start > 0:
            dst.write(logfile.dropped_mark(start)[:max_bytes])
        src.seek(start)
        left = size - start
        while left > 0:
            chunk = src.read(min(COPY_CHUNK, left))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    return start
