"""Read-ahead of the disk tier while the model loads: the newest entries' files read and hashed
on their own thread (no MLX), so the prefetch and a first lookup only parse them.

The folder depends on the model's variant (backend, dequantized), known only after the load: the
read-ahead takes the folder of a likely variant that holds the newest entry, and the disk tier
drops it when the model loaded as another. The bytes are handed over once (`take`) and checked
against the index's size and sha256 at that moment; the compatibility of the file's metadata is
checked by the tier as for any file it reads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import disk_index as di
from .fingerprint import model_fingerprint

log = logging.getLogger("server.cache")

# What `model_variant` can be for a whole model; a rank's shard is not guessed (no read-ahead).
LIKELY_VARIANTS = ("metal", "cuda", "cpu-float32", "cpu-float32-dequantized", "")

_READING = "reading"
_CLAIMED = "claimed"  # the tier reads it itself: the read-ahead must not


def likely_folder(root: Path, model_dir: Path) -> Path | None:
    """The existing model folder under `root`, among the likely variants', with the newest entry."""
    best: tuple[float, Path] | None = None
    for variant in LIKELY_VARIANTS:
        folder = root / model_fingerprint(model_dir, variant)
        if not (folder / di.INDEX_NAME).is_file():
            continue
        entries = di.read_index(folder)["entries"].values()
        newest = max((e.get("last_used", 0.0) for e in entries), default=None)
        if newest is not None and (best is None or newest > best[0]):
            best = (newest, folder)
    return None if best is None else best[1]


class ReadAhead:
    """The bytes of a folder's newest entries, read and verified up to `budget` bytes. Thread-safe.

    A `take` of an entry being read waits for that read; of one not read yet, claims it (the
    read-ahead skips it): every file is read once."""

    def __init__(self, find_folder: Callable[[], Path | None], budget: int):
        self._find_folder = find_folder  # on the thread: it hashes the model's files' edges
        self.budget = budget
        self.folder: Path | None = None  # known once the thread has chosen it
        self._state: dict[str, object] = {}  # key -> bytes, _READING or _CLAIMED
        self._checked: dict[str, tuple[str, int]] = {}  # key -> (sha256, size) it was read at
        self._cond = threading.Condition()
        self._stopped = False
        self._chosen = threading.Event()
        self.counts = {"entries": 0, "bytes": 0, "used": 0, "seconds": 0.0}
        self._thread = threading.Thread(target=self._run, name="kv-read-ahead", daemon=True)

    def start(self) -> ReadAhead:
        self._thread.start()
        return self

    def folder_for(self, timeout: float = 5.0) -> Path | None:
        """The folder being read (after the thread chose it: index reads only, quick)."""
        self._chosen.wait(timeout)
        return self.folder

    def wait(self, timeout: float | None = None) -> None:
        """Until every read is done."""
        self._thread.join(timeout)

    def take(self, key: str, entry: dict) -> bytes | None:
        """The verified bytes of `key` if they are those the index names now; else None, and
        the caller reads the file itself (the read-ahead will not)."""
        with self._cond:
            while self._state.get(key) is _READING:
                self._cond.wait()
            data = self._state.get(key)
            self._state[key] = _CLAIMED
            if not isinstance(data, bytes):
                return None
            if self._checked.get(key) != (entry.get("sha256"), entry.get("bytes")):
                return None  # the entry was rewritten since the read
            self.counts["used"] += 1
            return data

    def drop(self) -> None:
        """Stop reading and free what was read but not taken."""
        with self._cond:
            self._stopped = True
            self._state = {k: _CLAIMED for k in self._state}
            self._cond.notify_all()

    def stats(self) -> dict:
        with self._cond:
            held = sum(len(v) for v in self._state.values() if isinstance(v, bytes))
            return {**self.counts, "held_bytes": held}

    # the thread

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.folder = self._find_folder()
        except (OSError, ValueError) as e:
            log.info("kv cache: no read-ahead (%s)", e)
        finally:
            self._chosen.set()
        if self.folder is None:
            return
        entries = di.read_index(self.folder)["entries"]
        total = 0
        for key in sorted(entries, key=lambda k: entries[k].get("last_used", 0.0), reverse=True):
            entry = entries[key]
            if str(entry.get("format")) != str(di.FORMAT_VERSION):
                continue  # the tier will not offer it
            total += entry.get("bytes", 0)
            if total > self.budget:
                break  # where the prefetch stops too: RAM would not hold it
            with self._cond:
                if self._stopped:
                    break
                if key in self._state:
                    continue
                self._state[key] = _READING
            data = _read_verified(self.folder / entry.get("file", ""), entry)
            with self._cond:
                keep = data is not None and not self._stopped
                self._state[key] = data if keep and data is not None else _CLAIMED
                if keep and data is not None:
                    self._checked[key] = (entry.get("sha256"), entry.get("bytes"))
                    self.counts["entries"] += 1
                    self.counts["bytes"] += len(data)
                self._cond.notify_all()
        self.counts["seconds"] = round(time.perf_counter() - started, 3)
        log.info(
            "kv cache: read ahead %d entries (%.2f GiB) in %.2fs while the model loaded",
            self.counts["entries"],
            self.counts["bytes"] / 2**30,
            self.counts["seconds"],
        )


def _read_verified(path: Path, entry: dict) -> bytes | None:
    """The file's bytes when their size and sha256 are the index's; None otherwise (the tier
    then reads it again and skips it, logged, as it always does)."""
    try:
        if path.stat().st_size != entry.get("bytes"):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        return None
    return data


def start_read_ahead(root: str | os.PathLike, model_dir: Path, budget: int) -> ReadAhead:
    """Read `budget` bytes of the newest entries of this model's folder under `root`."""
    root = Path(root).expanduser()
    return ReadAhead(lambda: likely_folder(root, model_dir), budget).start()
