"""The worker-owned log under a flood: a real process writing as fast as it can stays bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlxctl.logs import tail
from server.edge.logfile import cap_rotated

REPO_ROOT = Path(__file__).resolve().parents[3]
MAX_BYTES = 64 * 1024
BACKUPS = 2

# Takes over its stdout and stderr like the worker, floods them, then idles past a check.
FLOOD = """
import os, sys, time
from server.edge.logfile import OwnedLog
log = OwnedLog(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
log.watch()
block = b"".join(b"flood line %08d " % i + b"x" * 100 + b"\\n" for i in range(1000))
for _ in range(int(sys.argv[4])):
    os.write(1, block)
print("flood done", flush=True)
deadline = time.monotonic() + 30  # until a check after the flood has rotated what it left
while os.stat(sys.argv[1]).st_size >= log.max_bytes and time.monotonic() < deadline:
    time.sleep(0.02)
with log.lock:  # and no rotation is half done when we exit
    pass
"""


def test_a_flooded_owned_log_stays_within_its_bound(tmp_path):
    log = tmp_path / "worker.log"
    blocks = 400  # ~46 MB, 700x max_bytes: every rotation has to keep up
    subprocess.run(
        [sys.executable, "-c", FLOOD, str(log), str(MAX_BYTES), str(BACKUPS), str(blocks)],
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    files = sorted(tmp_path.iterdir())
    assert (
        {"worker.log", "worker.log.1"}
        <= {f.name for f in files}
        <= {
            "worker.log",
            "worker.log.1",
            "worker.log.2",
        }
    )
    # Rotated files are cut back to max_bytes; the current one was rotated after the flood.
    assert all(f.stat().st_size <= MAX_BYTES for f in files)
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES * (BACKUPS + 1)
    # The newest output is there to read, across the rotations.
    lines = tail(log, 200)
    assert "flood done" in lines
    assert any(line.startswith("flood line 00000999") for line in lines)


def test_a_rotated_file_is_cut_at_a_line_with_a_mark(tmp_path):
    path = tmp_path / "worker.log.1"
    path.write_bytes(b"".join(b"line %05d\n" % i for i in range(1000)))  # 11000 bytes
    dropped = cap_rotated(path, 2000)
    data = path.read_bytes()
    assert len(data) <= 2000
    mark, kept = data.split(b"\n", 1)
    assert mark.startswith(b"---") and b"bytes of output dropped here" in mark
    assert kept.endswith(b"line 00999\n")  # the newest lines stay
    assert all(len(line) == 10 for line in kept.splitlines())  # whole lines only
    assert dropped == int(mark.split()[1])
    assert cap_rotated(path, 2000) == 0  # within the limit: untouched
