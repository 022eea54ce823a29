"""Stored responses (`store: true`): one gzipped JSON file per response under the home's
`responses/`, kept across restarts, bounded in count and bytes (the oldest go first).

A record is the response object as the client got it and the input items that led to it (the
whole conversation before its output, each item with an id), so a `previous_response_id` chain
needs only its last link: evicting or deleting an older response never breaks a newer one.
Calls block on the disk: the routes run them in the thread pool, never on the event loop.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from server.atomic import write_bytes
from server.contract import responses_dir
from server.settings import Settings

log = logging.getLogger("server.api")

SUFFIX = ".json.gz"
FORMAT = 1
# Ids this worker makes (resp_ and 24 hex digits); anything else never names a file.
_ID = re.compile(r"resp_[A-Za-z0-9]{1,64}")


class ResponseStore:
    def __init__(self, folder: Path, max_count: int, max_bytes: int):
        self.folder = folder
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # id -> file bytes, oldest first
        self._scan()

    @property
    def enabled(self) -> bool:
        return self.max_count > 0 and self.max_bytes > 0

    def _path(self, response_id: str) -> Path | None:
        return self.folder / f"{response_id}{SUFFIX}" if _ID.fullmatch(response_id) else None

    def _scan(self) -> None:
        """The files a previous run left, oldest first (by modification time)."""
        found = []
        try:
            for path in self.folder.glob(f"resp_*{SUFFIX}"):
                stat = path.stat()
                found.append((stat.st_mtime, path.name.removesuffix(SUFFIX), stat.st_size))
        except OSError as exc:  # no folder yet, or one unreadable: start empty
            if not isinstance(exc, FileNotFoundError):
                log.warning("stored responses in %s unreadable: %s", self.folder, exc)
        for _, response_id, size in sorted(found):
            self._sizes[response_id] = size
        if self._sizes:
            log.info("%d stored responses in %s", len(self._sizes), self.folder)
        if self.enabled:  # storing turned off keeps what is there, untouched
            with self._lock:
                self._evict()

    def put(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        path = self._path(response["id"])
        if path is None or not self.enabled:
            return
        record = {"format": FORMAT, "response": response, "input_items": input_items}
        data = gzip.compress(json.dumps(record).encode(), compresslevel=6)
        try:
            write_bytes(path, data)
        except OSError as exc:  # a full or read-only disk loses the record, not the reply
            log.warning("response %s not stored: %s", response["id"], exc)
            return
        with self._lock:
            self._sizes[response["id"]] = len(data)
            self._sizes.move_to_end(response["id"])
            self._evict()

    def get(self, response_id: str) -> dict[str, Any] | None:
        """The record ({"response", "input_items"}), or None: unknown, evicted or unreadable."""
        path = self._path(response_id)
        if path is None:
            return None
        try:
            record = json.loads(gzip.decompress(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError) as exc:
            log.warning("stored response %s unreadable, skipped: %s", response_id, exc)
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        return record

    def delete(self, response_id: str) -> bool:
        path = self._path(response_id)
        if path is None:
            return False
        with self._lock:
            self._sizes.pop(response_id, None)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _evict(self) -> None:
        """Drop the oldest records past either bound (the lock is held)."""
        total = sum(self._sizes.values())
        while self._sizes and (len(self._sizes) > self.max_count or total > self.max_bytes):
            oldest, size = self._sizes.popitem(last=False)
            total -= size
            path = self._path(oldest)
            if path is not None:
                path.unlink(missing_ok=True)


def open_store(settings: Settings) -> ResponseStore:
    folder = Path(settings.responses_dir) if settings.responses_dir else responses_dir()
    return ResponseStore(folder, settings.responses_max_count, settings.responses_max_bytes)
