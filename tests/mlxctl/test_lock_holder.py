"""The supervisor lock names its holder: `stop` finds the supervisor without the state file."""

from __future__ import annotations

import subprocess
import sys

from mlxctl.system.lock import FileLock, holder


def test_the_holder_is_readable_while_held_and_none_after(tmp_path):
    path = tmp_path / "supervisor.lock"
    lock = FileLock(path)
    assert lock.acquire(blocking=False)
    lock.record_owner({"pid": 1, "create_time": 2.0, "nonce": "n"})
    lock.record_owner({"pid": 3, "create_time": 4.0})  # a shorter record leaves no tail
    # flock is per open file: another process sees it held and reads the record.
    probe = (
        "from pathlib import Path; from mlxctl.system.lock import holder; print(holder(Path(%r)))"
    )
    seen = subprocess.run([sys.executable, "-c", probe % str(path)], capture_output=True, text=True)
    assert seen.stdout.strip() == "{'pid': 3, 'create_time': 4.0}", seen.stderr
    lock.release()
    assert holder(path) is None  # free: whatever the file says is stale
