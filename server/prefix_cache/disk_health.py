"""Whether the disk tier may be used now. A failed read or write (a full or read-only disk, a
folder replaced under the worker) costs only that entry: the worker goes on in RAM only, logs
the outage once, reports it in `/v1/status`, and tries the disk again after a back-off."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time

log = logging.getLogger("server.cache")

DEFAULT_RETRY_S = 60.0


class DiskHealth:
    def __init__(self, retry_s: float = DEFAULT_RETRY_S):
        self.retry_s = retry_s
        self.reason: str | None = None  # the last failure while the outage lasts
        self.since: float | None = None  # wall clock of the outage's first failure
        self._retry_at = 0.0  # time.monotonic() from which the disk is tried again
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """Healthy, or failing but due for another try."""
        return self.reason is None or time.monotonic() >= self._retry_at

    def retry_now(self) -> None:
        """The stop's flush: one last try, whatever the back-off says."""
        self._retry_at = 0.0

    def failed(
        self, what: str, exc: BaseException, folder: str | os.PathLike | None = None
    ) -> None:
        """A read or write failed; `folder` given, the reason says the space left there (MLX's
        own write error does not say the disk is full)."""
        reason = f"{what}: {type(exc).__name__}: {exc}"
        if folder is not None:
            with contextlib.suppress(OSError):
                reason += f" ({shutil.disk_usage(folder).free / 2**20:.1f} MiB free)"
        with self._lock:
            first = self.reason is None
            self.reason = reason
            self.since = self.since or time.time()
            self._retry_at = time.monotonic() + self.retry_s
        # Once per outage: a disk that stays full must not flood the log at every request.
        (log.warning if first else log.debug)(
            "kv cache: disk tier failed (%s); serving from RAM only, trying the disk again in %gs",
            self.reason,
            self.retry_s,
        )

    def worked(self) -> None:
        with self._lock:
            if self.reason is None:
                return
            lasted = time.time() - (self.since or time.time())
            self.reason = self.since = None
        log.info("kv cache: disk tier works again (after %.0fs)", lasted)

    def status(self) -> dict | None:
        """None when healthy; else the reason, since when, and seconds to the next try."""
        with self._lock:
            if self.reason is None:
                return None
            retry_in = max(0.0, self._retry_at - time.monotonic())
            return {"reason": self.reason, "since": self.since, "retry_in_s": round(retry_in, 1)}
