"""The newest conversation request, kept beside the disk tier so a restart can replay it.

After a restart or a crash the next turn continues the newest conversation. Replaying its last
request before ready (engine.sequential.replay_last) pays every first-use cost that turn would
otherwise pay: the chat template and tool grammar compiled, llguidance's tokenizer built, the
restored entry moved where the model reads it, the kernels at that context loaded. The body is
written off the event loop by one thread, newest wins; a failed write is logged once, never
raised (a full or read-only disk costs only this file).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from server.edge.atomic import write_bytes

log = logging.getLogger("server.cache")

MAX_BYTES = 8 * 1024 * 1024  # a body this big holds images: replaying it is no small warm-up
REPLAYED_PATHS = ("/v1/messages", "/v1/chat/completions")  # what warm_prompts can read back


class LastRequest:
    """Keeps the newest body given to `keep` in `path`, written on a thread of its own."""

    def __init__(self, path: Path):
        self.path = path
        self._pending: bytes | None = None
        self._wake = threading.Condition()
        self._failed = False
        threading.Thread(target=self._write_loop, name="last-request", daemon=True).start()

    def keep(self, body: bytes) -> None:
        """Remember `body` (too big a one is skipped); never blocks on the disk."""
        if len(body) > MAX_BYTES:
            return
        with self._wake:
            self._pending = body
            self._wake.notify()

    def forget(self) -> None:
        """A cache clear: the kept body goes with the entries it would replay."""
        with self._wake:
            self._pending = None
        self.path.unlink(missing_ok=True)

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while self._pending is None:
                    self._wake.wait()
                body, self._pending = self._pending, None
            try:
                write_bytes(self.path, body)
                self._failed = False
            except OSError as exc:
                if not self._failed:  # once per outage, not once per request
                    log.warning("kv cache: could not keep the last request for replay: %s", exc)
                self._failed = True
