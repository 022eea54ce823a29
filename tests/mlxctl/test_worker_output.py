"""The log of a worker that cannot rotate its own: a real process floods it, a keeper thread
rotates it by copy and truncate, bounded, while the caller's loop is never held up."""

from __future__ import annotations

import os
import subprocess
import sys

from mlxctl.logs import tail
from mlxctl.supervisor.worker_output import WorkerOutput, copy_newest
from tests.conftest import wait_until

MAX_BYTES = 64 * 1024
BACKUPS = 2

FLOOD = """
import os, sys
block = b"".join(b"flood line %08d " % i + b"x" * 100 + b"\\n" for i in range(1000))
for _ in range(int(sys.argv[1])):
    os.write(1, block)
os.write(1, b"flood done\\n")
"""


def test_a_flooded_log_stays_within_its_bound_off_the_callers_thread(tmp_path):
    log = tmp_path / "worker.log"
    said: list[str] = []
    output = WorkerOutput(log, MAX_BYTES, BACKUPS, log=said.append)
    fd = output.open_for([sys.executable, "-c", FLOOD])  # no --log-file: ours to rotate
    keeper = output.start_keeper()
    try:
        child = subprocess.run(
            [sys.executable, "-c", FLOOD, "400"], stdout=fd, stderr=fd, timeout=120, check=True
        )
        assert child.returncode == 0
        # A check after the flood rotates what it left.
        assert wait_until(lambda: log.stat().st_size < MAX_BYTES, timeout=30)
    finally:
        os.close(fd)
        output.stop_keeper()
    assert keeper.name == "worker-log-keeper" and not keeper.is_alive()
    files = sorted(tmp_path.iterdir())
    assert {f.name for f in files} <= {"worker.log", "worker.log.1", "worker.log.2"}
    assert all(f.stat().st_size <= MAX_BYTES for f in files)
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES * (BACKUPS + 1)
    assert output.dropped > 0 and said == []
    # The newest output survives the cut and reads across the rotation.
    lines = tail(log, 50)
    assert lines[-1] == "flood done"
    assert any(line.startswith("flood line 00000999") for line in lines)


def test_a_worker_that_owns_its_log_is_left_alone(tmp_path):
    log = tmp_path / "worker.log"
    output = WorkerOutput(log, 1024, 1, log=print)
    os.close(output.open_for(["python", "-m", "server", "--log-file", str(log)]))
    log.write_bytes(b"x" * 5000)
    assert output.keep() is False and log.stat().st_size == 5000


def test_a_copy_keeps_the_newest_whole_lines_under_a_mark(tmp_path):
    source, target = tmp_path / "worker.log", tmp_path / "worker.log.1"
    source.write_bytes(b"".join(b"line %05d\n" % i for i in range(1000)))
    dropped = copy_newest(source, target, 2000)
    mark, kept = target.read_bytes().split(b"\n", 1)
    assert target.stat().st_size <= 2000
    assert mark.startswith(b"---") and b"dropped here" in mark
    assert kept.endswith(b"line 00999\n") and all(len(x) == 10 for x in kept.splitlines())
    assert dropped == int(mark.split()[1]) == 11000 - len(kept)
    assert copy_newest(source, target, 20000) == 0 and target.read_bytes() == source.read_bytes()


def test_the_tail_is_what_the_newest_worker_said_since_its_start_mark(tmp_path):
    output = WorkerOutput(tmp_path / "worker.log", MAX_BYTES, BACKUPS, log=print)
    assert output.tail() == ""  # no log yet
    output.mark("--- mlxctl: starting the worker for old")
    fd = output.open_for(["worker"])
    os.write(fd, b"old worker line\n")
    output.mark("--- mlxctl: starting the worker for new")
    os.write(fd, b"Traceback (most recent call last):\n  boom\n\nSystemExit: broken upgrade\n")
    os.close(fd)
    assert output.tail() == "Traceback (most recent call last): | boom | SystemExit: broken upgrade"
    assert output.tail(lines=1) == "SystemExit: broken upgrade"
