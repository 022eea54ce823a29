"""Real processes: a flood of worker output stays within the log's bound on disk while the
supervisor goes on supervising (issue 26, item 9)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from tests.e2e.test_supervisor_e2e import running_status, start

pytestmark = pytest.mark.slow

MAX_BYTES = 64 * 1024
BACKUPS = 2  # FAST_CONFIG's

# Writes into the worker's log as fast as it can until killed (a worker's runaway output).
FLOOD = """
import os
block = b"".join(b"flood line %08d " % i + b"x" * 100 + b"\\n" for i in range(1000))
while True:
    os.write(1, block)
"""


def log_files(ctl) -> dict[str, int]:
    found = {}
    for path in (ctl.home / "logs").glob("worker.log*"):
        with contextlib.suppress(FileNotFoundError):  # rotated away since the listing
            found[path.name] = path.stat().st_size
    return found


def test_a_flood_stays_bounded_while_the_supervisor_restarts_a_killed_worker(make_ctl):
    ctl = make_ctl(log_max=MAX_BYTES)
    start(ctl)
    before = running_status(ctl)
    log = ctl.home / "logs" / "worker.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    flooder = subprocess.Popen([sys.executable, "-c", FLOOD], stdout=fd, stderr=fd)
    os.close(fd)
    try:
        ctl.wait_for(lambda: "worker.log.2" in log_files(ctl), timeout=20, what="rotations")
        # Mid-flood, the supervisor sees a dead worker and brings up another.
        os.kill(before["worker_pid"], signal.SIGKILL)
        after = ctl.wait_for(
            lambda: (st := running_status(ctl))["worker_pid"] != before["worker_pid"] and st,
            timeout=30,
            what="a new worker",
        )
        assert after["restarts"] == 1
        status = ctl.run("status", "--json", timeout=30)
        assert status.returncode == 0 and '"RUNNING"' in status.stdout
        assert flooder.poll() is None  # still flooding all along
    finally:
        flooder.kill()
        flooder.wait()
    # After the next check every file is within max_bytes: the bound holds whatever the rate.
    ctl.wait_for(
        lambda: all(size <= MAX_BYTES for size in log_files(ctl).values()),
        timeout=10,
        what="a rotation after the flood",
    )
    assert sum(log_files(ctl).values()) <= MAX_BYTES * (BACKUPS + 1)
    # `mlxctl logs -n` reads back across the rotated files.
    lines = ctl.run("logs", "-n", "600", check=True).stdout.splitlines()
    assert len(lines) == 600 and any(line.startswith("flood line") for line in lines)
