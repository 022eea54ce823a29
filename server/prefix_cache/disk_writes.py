"""Dirty RAM entries onto the disk tier: the write-behind's passes, a shed's, and the stop's flush.

Each entry is claimed while it is written, so two writers never write the same file. The stop
does not wait behind the write-behind: it takes the newest entries first, while the writer may
still be on an older one (a slow disk, a 2 GB entry), so a restart resumes from the last turn.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from .disk import DiskTier
from .disk_health import DiskHealth
from .entry_format import tokens_key
from .ram_tier import Entry, RamTier
from .writer import WriteBehind, test_dwell

log = logging.getLogger(__name__)


class PrefixStore(Protocol):
    """What these functions use of `store.PrefixStore` (which calls them)."""

    disk: DiskTier | None
    disk_health: DiskHealth
    ram: RamTier
    lock: threading.RLock
    claimed: set[int]
    writer: WriteBehind | None
    private_writes: bool
    write_bps: float | None
    written_behind: int

    def dirty(self) -> list[Entry]: ...


def write_dirty(
    store: PrefixStore, stop: threading.Event | None = None, deadline: float | None = None
) -> int:
    """Write dirty entries, most recent first, until `stop` is set or `deadline`
    (time.monotonic()) passes; the first one is tried whenever time is left, the others only
    when they should finish in time at the measured speed. Returns how many were written."""
    disk = store.disk
    if disk is None or not store.disk_health.usable():
        return 0  # failing: the entries stay dirty in RAM until the disk is tried again
    written, tried = 0, False
    for entry in store.dirty():
        if deadline is not None and time.monotonic() >= deadline:
            break
        if (
            tried
            and deadline is not None
            and (time.monotonic() + entry.nbytes / (store.write_bps or float("inf")) > deadline)
        ):
            continue  # would not finish in time; a smaller one may
        if not _claim(store, entry, stop):
            if stop is not None and stop.is_set():
                break
            continue
        try:
            tried = True
            saved = _write(store, entry, stop)
        except Exception as exc:  # full or read-only: RAM keeps it, the disk waits
            store.disk_health.failed("write", exc, disk.folder)
            break
        finally:
            with store.lock:
                store.claimed.discard(id(entry))
        if saved is not None:  # the disk answered
            store.disk_health.worked()
        written += bool(saved)
    return written


def _claim(store: PrefixStore, entry: Entry, stop: threading.Event | None) -> bool:
    """Take `entry` for this writer: still the RAM tier's, not being written by another, and
    (the write-behind) not stopped. Under the store's lock, as the stop's is."""
    with store.lock:
        if stop is not None and stop.is_set():
            return False
        if (
            id(entry) in store.claimed
            or store.ram.entries.get(tokens_key(entry.tokens)) is not entry
        ):
            return False  # another writer has it, or superseded / evicted since
        store.claimed.add(id(entry))
        return True


def _write(store: PrefixStore, entry: Entry, stop: threading.Event | None) -> bool | None:
    """Whether `entry` was written (False: over the disk budget); None when left to the stop."""
    disk, writer = store.disk, store.writer
    assert disk is not None
    copyless = store.private_writes and entry.to_write is None  # nothing it may read
    if stop is not None and writer is not None and (copyless or not writer.allow(entry.nbytes)):
        entry.to_write = None
        return None  # the stop's flush writes it
    meta = {"kind": entry.kind, "trimmable": "1" if entry.trimmable else "0"}
    before, t0 = disk.bytes_written, time.monotonic()
    arrays = entry.cache if entry.to_write is None else entry.to_write
    if stop is not None:
        test_dwell()
    try:
        saved = disk.save(entry.tokens, arrays, entry.nbytes, entry.last_used, meta)
    finally:
        entry.to_write = None  # one attempt per copy: a failed write waits for the stop
    if saved:
        entry.on_disk = True
        store.write_bps = entry.nbytes / max(time.monotonic() - t0, 1e-6)
        if stop is not None:  # the writer thread's pass, not the stop's flush
            store.written_behind += disk.bytes_written - before
    return saved


def flush(store: PrefixStore, budget_s: float | None = None) -> int:
    """Graceful stop: the writer takes no new entry; what is still dirty is written, newest
    first, within `budget_s` seconds, beside whatever older entry the writer is finishing.
    Returns how many were written."""
    if store.disk is None:
        return 0
    started = time.monotonic()
    deadline = None if budget_s is None else started + budget_s
    store.disk_health.retry_now()  # the last chance to keep RAM's entries
    if store.writer is not None:
        with store.lock:  # a writer claiming an entry sees the stop
            store.writer.stop_soon()
    todo = len(store.dirty())
    written = write_dirty(store, deadline=deadline)
    if store.writer is not None:
        left = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not store.writer.join(left):
            log.warning("kv cache: the write-behind was still on an older entry at stop")
    log.info("kv cache: flushed %d of %d dirty entries to disk", written, todo)
    return written
