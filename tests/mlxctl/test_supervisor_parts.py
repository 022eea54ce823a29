"""Unit tests of the supervisor's small parts: atomic state files, the lock, process identity."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mlxctl.system import identity, statefile
from mlxctl.system.lock import FileLock, is_held


def test_state_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "run" / "state.json"
    statefile.write_json(path, {"state": "RUNNING"})
    statefile.write_json(path, {"state": "STOPPED"})
    assert statefile.read_json(path) == {"state": "STOPPED"}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left
    assert statefile.read_json(tmp_path / "missing.json") is None
    path.write_text("{half")
    with pytest.raises(statefile.StateError):
        statefile.read_json(path)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    statefile.write_json(path, {"state": "RUNNING"})
    with pytest.raises(TypeError):
        statefile.write_json(path, {"bad": object()})
    assert statefile.read_json(path) == {"state": "RUNNING"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_lock_is_held_while_its_process_lives(tmp_path):
    path = tmp_path / "supervisor.lock"
    code = (
        "import sys, time\n"
        "from mlxctl.system.lock import FileLock\n"
        f"FileLock(__import__('pathlib').Path({str(path)!r})).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_held(path)
        assert not FileLock(path).acquire(blocking=False)
        assert not FileLock(path).acquire(timeout=0.2)
    finally:
        holder.kill()  # the kernel releases the lock with the process
        holder.wait()
    assert not is_held(path)
    with FileLock(path):
        assert is_held(path) is True
    assert not is_held(path)


def test_identity_needs_pid_create_time_and_nonce():
    me = identity.current()
    assert identity.is_alive(me)
    assert not identity.is_alive(identity.Identity(me.pid, me.create_time - 50))  # pid reused
    assert not identity.is_alive(None)
    nonce = identity.new_nonce()
    env = dict(os.environ, **{identity.NONCE_ENV: nonce})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        time.sleep(0.1)
        ours = identity.Identity.of(child.pid, nonce)
        assert identity.is_alive(ours)
        assert not identity.is_alive(identity.Identity.of(child.pid, "another-nonce"))
        assert identity.Identity.from_dict(ours.to_dict()) == ours
    finally:
        child.kill()
        child.wait()
    assert not identity.is_alive(ours)
    assert identity.Identity.from_dict({"pid": "x"}) is None


def test_an_exited_process_counts_as_gone_before_anyone_reaps_it():
    import psutil

    from mlxctl.system.processes import wait_exited

    # Not reaped yet: a zombie, as a detached supervisor is until its adopter reaps it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    began = time.monotonic()
    assert wait_exited(proc, timeout=10)
    assert proc.status() == psutil.STATUS_ZOMBIE and time.monotonic() - began < 5
    child.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not wait_exited(psutil.Process(sleeper.pid), timeout=0.3)
    finally:
        sleeper.kill()
        sleeper.wait()
