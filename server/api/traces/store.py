"""The trace folder: files written on a thread of their own, bounded in bytes and in count.

The event loop only queues an exchange; this thread encodes it, writes it atomically as
`<UTC time>-<request id>.json` (names sort by time) and deletes the oldest files while the
folder is over either bound. A failure costs that trace and a log line, never a request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from server.api.traces.record import Exchange, encode
from server.edge import atomic, contract

log = logging.getLogger("server.traces")
MAX_QUEUED = 256  # exchanges waiting for the thread; past it a trace is dropped, not memory


def file_name(exchange: Exchange) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(exchange.started_at))
    millis = int(exchange.started_at * 1000) % 1000
    return f"{stamp}.{millis:03d}Z-{exchange.id}.json"


class TraceStore:
    def __init__(
        self,
        folder: str | Path | None,
        max_bytes: int,
        max_files: int,
        api_key: str | None = None,
    ):
        self.folder = Path(folder) if folder else None
        self.enabled = self.folder is not None  # off by default: no folder, no traces
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.secrets = {api_key} if api_key else set()
        self.written = 0
        self.skipped = 0  # over max_bytes on its own, or a failed write
        self._files: list[tuple[str, int]] | None = None  # (name, bytes), oldest first
        self._queue: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def set_enabled(self, on: bool) -> None:
        """Turn recording on or off live; on without a folder records into the home's."""
        with self._lock:
            if on and self.folder is None:
                self.folder = contract.traces_dir()
            self.enabled = on
            self._files = None  # look again: someone may have cleared the folder meanwhile
        log.info("request traces %s%s", "on" if on else "off", f" in {self.folder}" if on else "")

    def submit(self, exchange: Exchange) -> None:
        """Queue one finished exchange (cheap: the event loop calls it)."""
        if not self.enabled:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.skipped += 1
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="traces", daemon=True)
            self._thread.start()
        self._queue.put(exchange)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def status(self) -> dict:
        files = self._files or []
        return {
            "enabled": self.enabled,
            "dir": str(self.folder) if self.folder else None,
            "files": len(files),
            "bytes": sum(size for _, size in files),
            "max_bytes": self.max_bytes,
            "max_files": self.max_files,
            "written": self.written,
            "skipped": self.skipped,
        }

    def _run(self) -> None:
        while True:
            exchange = self._queue.get()
            if exchange is None:
                return
            try:
                self._write(exchange)
            except Exception as exc:  # a trace must never take the worker down
                self.skipped += 1
                log.warning("trace %s not written: %s", exchange.id, exc)

    def _write(self, exchange: Exchange) -> None:
        folder = self.folder
        if folder is None:
            return
        data = encode(exchange, self.secrets)
        if len(data) > self.max_bytes:
            self.skipped += 1
            log.warning(
                "trace %s not written: %d bytes, over the folder's bound of %d",
                exchange.id,
                len(data),
                self.max_bytes,
            )
            return
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = self._listing(folder)
        self._prune(folder, files, len(data))  # room first: the bounds hold at every moment
        name = file_name(exchange)
        atomic.write_bytes(folder / name, data, tmp_prefix=".trace-")
        self.written += 1
        files.append((name, len(data)))

    def _listing(self, folder: Path) -> list[tuple[str, int]]:
        """What the folder held when this thread first looked, kept up to date since."""
        if self._files is None:
            found = []
            for path in folder.glob("*.json"):
                try:
                    found.append((path.name, path.stat().st_size))
                except FileNotFoundError:
                    continue
            self._files = sorted(found)
        return self._files

    def _prune(self, folder: Path, files: list[tuple[str, int]], incoming: int) -> None:
        """Delete the oldest files until one more of `incoming` bytes fits both bounds."""
        total = sum(size for _, size in files) + incoming
        while files and (len(files) >= self.max_files or total > self.max_bytes):
            name, size = files.pop(0)
            (folder / name).unlink(missing_ok=True)
            total -= size
