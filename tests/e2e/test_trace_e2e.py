"""`mlxctl trace` against a real supervised worker: the config's switch reaches a start, and
on/off switch the running worker live, with no restart."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.test_supervisor_e2e import running_status, start

pytestmark = pytest.mark.slow


def ask(ctl, text: str) -> str:
    """One chat request; its request id."""
    reply = httpx.post(
        f"{ctl.url}/v1/chat/completions",
        json={
            "model": "tiny-default",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 4,
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return reply.headers["x-request-id"]


def listed(ctl) -> list[str]:
    return [row["id"] for row in json.loads(ctl.run("trace", "ls", "--json", check=True).stdout)]


def test_trace_on_and_off_reach_the_running_worker_live(make_ctl):
    ctl = make_ctl(real=True, env={"MLXCTL_WORKER_COMMAND": ""})
    ctl.run("config", "set", "trace.enabled", "true", check=True)
    start(ctl)
    worker = running_status(ctl)["worker_pid"]
    first = ask(ctl, "traced from the start")
    assert wait_until(lambda: first in listed(ctl), timeout=10)

    off = ctl.run("trace", "off", check=True)
    assert "request traces off" in off.stdout and "in the config" not in off.stdout
    quiet = ask(ctl, "not traced")
    on = ctl.run("trace", "on", "--json", check=True)
    assert json.loads(on.stdout)["live"] is True
    loud = ask(ctl, "traced again")
    assert wait_until(lambda: loud in listed(ctl), timeout=10)
    assert quiet not in listed(ctl)
    assert running_status(ctl)["worker_pid"] == worker  # no restart

    shown = ctl.run("trace", "show", loud[:6], check=True).stdout
    assert f"trace {loud}: POST /v1/chat/completions -> 200, json" in shown
    assert "traced again" in shown
    table = ctl.run("trace", "ls", check=True).stdout
    assert loud in table and "2 of 2 traces shown" in table
