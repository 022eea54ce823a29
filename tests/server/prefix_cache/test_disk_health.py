"""DiskHealth: a failure turns the disk off for a back-off, logged once per outage."""

from __future__ import annotations

import logging
import time

from server.prefix_cache.disk_health import DiskHealth


def test_a_failure_backs_off_logs_once_and_a_success_ends_the_outage(caplog):
    health = DiskHealth(retry_s=0.2)
    assert health.usable() and health.status() is None
    with caplog.at_level(logging.DEBUG, logger="server.cache"):
        health.failed("write", OSError(28, "No space left on device"))
        since = health.status()["since"]
        assert not health.usable()
        time.sleep(0.25)
        assert health.usable()  # due for another try
        health.failed("write", OSError(30, "Read-only file system"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    status = health.status()
    assert status["since"] == since and "Read-only" in status["reason"]
    assert 0 < status["retry_in_s"] <= 0.2
    health.worked()
    assert health.usable() and health.status() is None


def test_the_stops_flush_tries_a_failing_disk_at_once():
    health = DiskHealth(retry_s=3600)
    health.failed("read", IsADirectoryError(21, "Is a directory"))
    assert not health.usable()
    health.retry_now()
    assert health.usable()
