"""The service keeps the address it was started on, and releases record models that resolve."""

from __future__ import annotations

import json
import os
import signal

import pytest

from mlxctl.system.processes import free_port
from tests.fixtures_supervisor import FAKE_WORKER_SCRIPT

pytestmark = pytest.mark.slow


def create_fake_release(ctl, note: str) -> str:
    """A release running the fake worker (fast, answers chat and streams) on {port}."""
    command = f"{{python}} {FAKE_WORKER_SCRIPT} --port {{port}}"
    ctl.run("release", "create", "--command", command, "--note", note, check=True)
    listed = json.loads(ctl.run("release", "ls", "--json", check=True).stdout)
    return next(r["id"] for r in listed if r["note"] == note)


def serving_port(ctl) -> int:
    status, code = ctl.status()
    assert code == 0, status
    return status["port"]


def test_restarts_migrations_and_rollbacks_keep_the_started_port(make_ctl):
    ctl = make_ctl()
    given = free_port()
    first, second = create_fake_release(ctl, "first"), create_fake_release(ctl, "second")
    ctl.run("start", "--port", str(given), check=True)
    assert serving_port(ctl) == given != ctl.port  # ctl.port is the config's

    ctl.run("restart", check=True)
    assert serving_port(ctl) == given
    worker = ctl.status()[0]["worker_pid"]
    os.kill(worker, signal.SIGKILL)  # a crash: the supervisor restarts it
    ctl.wait_for(lambda: ctl.status()[0].get("restarts", 0) >= 1 and ctl.status()[1] == 0,
                 what="the crash restart")  # fmt: skip
    assert serving_port(ctl) == given

    for args in (("migrate", "--to", first), ("migrate", "--to", second), ("rollback",)):
        result = ctl.run(*args, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert serving_port(ctl) == given, args
    ctl.run("stop", check=True)
    ctl.run("start", check=True)  # the address stays the service's until the user changes it
    assert serving_port(ctl) == given
    other = free_port()
    ctl.run("restart", "--port", str(other), check=True)
    assert serving_port(ctl) == other


def test_the_config_port_changed_by_the_user_wins_over_the_recorded_one(make_ctl):
    ctl = make_ctl()
    ctl.run("start", "--port", str(free_port()), check=True)
    ctl.run("stop", check=True)
    config = ctl.home / "config.toml"
    moved = free_port()
    ctl.run("config", "set", "port", str(moved), check=True)
    assert f"port = {moved}" in config.read_text()
    ctl.run("start", check=True)
    assert serving_port(ctl) == moved


def test_an_archive_of_a_service_started_on_a_path_records_the_path(make_ctl, tiny_model_path):
    ctl = make_ctl()
    config = ctl.home / "config.toml"
    config.write_text(config.read_text().replace(f'model = "{tiny_model_path}"', 'model = ""'))
    ctl.run("start", "--model", str(tiny_model_path), check=True)
    ctl.run("release", "archive", "--note", "started on a path", check=True)
    (archived,) = json.loads(ctl.run("release", "ls", "--json", check=True).stdout)
    assert archived["model"] == str(tiny_model_path.resolve())
