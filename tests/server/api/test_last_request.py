"""The kept last request: newest wins, too big a body is skipped, a failing disk logs once."""

from __future__ import annotations

import logging
import time

from server.api.last_request import MAX_BYTES, LastRequest


def _wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_the_newest_body_is_kept_and_too_big_a_one_is_skipped(tmp_path):
    kept = LastRequest(tmp_path / "last-request.json")
    kept.keep(b'{"n": 1}')
    kept.keep(b'{"n": 2}')
    assert _wait_for(lambda: kept.path.exists() and kept.path.read_bytes() == b'{"n": 2}')
    kept.keep(b"x" * (MAX_BYTES + 1))
    kept.keep(b'{"n": 3}')
    assert _wait_for(lambda: kept.path.read_bytes() == b'{"n": 3}')
    kept.forget()
    assert not kept.path.exists()


def test_a_disk_that_fails_is_logged_once_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    kept = LastRequest(blocker / "last-request.json")  # its folder cannot be made
    with caplog.at_level(logging.WARNING, logger="server.cache"):
        for _ in range(3):
            kept.keep(b"{}")
            time.sleep(0.1)
        assert _wait_for(lambda: "could not keep the last request" in caplog.text)
        time.sleep(0.2)
    assert caplog.text.count("could not keep the last request") == 1
