"""Stored responses (`store: true`): one gzipped JSON file per response under the home's
`responses/`, kept across restarts, bounded in count and bytes (the oldest go first).

A record is the response object as the client got it and the input items that led to it (the
whole conversation before its output, each item with an id), so a `previous_response_id` chain
needs only its last link: evicting or deleting an older response never breaks a newer one.
`hold` keeps a finished response in memory at once (no disk: safe on the event loop) and makes
room for it; `write`, in a thread, stores it while the reply's last bytes leave, and removes
what was dropped, so storing never delays a reply. The index in memory is what this worker
serves (the folder is its own).
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from server.edge.atomic import write_bytes
from server.edge.contract import responses_dir
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
        self._lock = threading.Lock()  # guards the maps and the list below
        self._write_lock = threading.Lock()  # one write at a time: the newest record lands last
        self._pending: dict[str, dict[str, Any]] = {}  # held, not written yet
        self._sizes: OrderedDict[str, int] = OrderedDict()  # written: id -> bytes, oldest first
        self._dropped: list[str] = []  # evicted, their files not removed yet
        # The order records came in (held first, or found on disk): a write may land after a
        # newer record's, and the oldest must still go first.
        self._born: dict[str, int] = {}
        self._births = itertools.count()
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
            self._born[response_id] = next(self._births)
        if self._sizes:
            log.info("%d stored responses in %s", len(self._sizes), self.folder)
        if self.enabled:  # storing turned off keeps what is there, untouched
            with self._lock:
                self._evict()
            self._remove_dropped()

    def hold(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> bool:
        """Keep a record in memory until `write` stores it; False: nothing is kept."""
        if self._path(response["id"]) is None or not self.enabled:
            return False
        record = {"format": FORMAT, "response": response, "input_items": input_items}
        with self._lock:
            self._pending[response["id"]] = record
            if response["id"] not in self._born:
                self._born[response["id"]] = next(self._births)
            self._evict()  # the count bound holds at once; bytes are known once written
        return True

    def write(self, response_id: str) -> None:
        """Write the newest held record of `response_id` (blocking: a thread's work)."""
        path = self._path(response_id)
        with self._write_lock:
            self._remove_dropped()
            with self._lock:
                record = self._pending.get(response_id)
            if record is None or path is None:
                return  # written already, or deleted
            data = gzip.compress(json.dumps(record).encode(), compresslevel=6)
            try:
                write_bytes(path, data)
            except OSError as exc:  # a full or read-only disk loses the record, not the reply
                log.warning("response %s not stored: %s", response_id, exc)
                with self._lock:
                    if self._pending.get(response_id) is record:
                        del self._pending[response_id]
                return
            with self._lock:
                if response_id not in self._pending:  # deleted while it was written
                    self._dropped.append(response_id)
                else:
                    if self._pending[response_id] is record:  # else a newer one comes next
                        del self._pending[response_id]
                    self._sizes[response_id] = len(data)
                    self._sizes.move_to_end(response_id)
                    self._evict()
            self._remove_dropped()

    def put(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        if self.hold(response, input_items):
            self.write(response["id"])

    def get(self, response_id: str) -> dict[str, Any] | None:
        """The record ({"response", "input_items"}), or None: unknown, evicted or unreadable."""
        path = self._path(response_id)
        with self._lock:
            held = self._pending.get(response_id)
            known = response_id in self._sizes
        if held is not None or path is None or not known:
            return held
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

    def find_items(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        """The stored items (input or output) with these ids, newest record first; reads files
        until all are found (blocking: a thread's work). What is not found is left out."""
        with self._lock:
            held = list(reversed(self._pending))
            written = [r for r in reversed(self._sizes) if r not in self._pending]
        found: dict[str, dict[str, Any]] = {}
        for response_id in [*held, *written]:
            record = self.get(response_id)
            if record is None:
                continue
            for item in [*record["input_items"], *record["response"].get("output", [])]:
                if isinstance(item, dict) and item.get("id") in ids and item["id"] not in found:
                    found[item["id"]] = item
            if len(found) == len(ids):
                break
        return found

    def delete(self, response_id: str) -> bool:
        if self._path(response_id) is None:
            return False
        with self._lock:
            held = self._pending.pop(response_id, None) is not None
            known = self._sizes.pop(response_id, None) is not None
            self._born.pop(response_id, None)
            if known:
                self._dropped.append(response_id)
        self._remove_dropped()
        return held or known

    def _evict(self) -> None:
        """Drop the oldest records past either bound (the lock is held): past the count, one
        held but not written yet goes unwritten where it is the oldest (its write lagged)."""
        unwritten = [k for k in self._pending if k not in self._sizes]
        count, total = len(self._sizes) + len(unwritten), sum(self._sizes.values())
        while count > self.max_count or total > self.max_bytes:
            held = min(unwritten, key=self._born.__getitem__, default=None)
            written = next(iter(self._sizes), None)
            if (
                count > self.max_count
                and held is not None
                and (written is None or self._born[held] < self._born[written])
            ):
                unwritten.remove(held)
                del self._pending[held]
                del self._born[held]
                count -= 1
                continue
            if written is None:
                return
            size = self._sizes.pop(written)
            if written not in self._pending:  # one held again (a run's end) is written anew
                self._dropped.append(written)
                self._born.pop(written, None)
                count -= 1
            total -= size

    def _remove_dropped(self) -> None:
        """Remove the files of dropped records, unless one was stored again since."""
        with self._lock:
            dropped, self._dropped = self._dropped, []
            dropped = [d for d in dropped if d not in self._sizes and d not in self._pending]
        for response_id in dropped:
            path = self._path(response_id)
            if path is not None:
                path.unlink(missing_ok=True)


def open_store(settings: Settings) -> ResponseStore:
    folder = Path(settings.responses_dir) if settings.responses_dir else responses_dir()
    return ResponseStore(folder, settings.responses_max_count, settings.responses_max_bytes)
