"""Real processes end to end: the supervisor running the real worker on the tiny test model."""

from __future__ import annotations

import os
import signal

import openai
import psutil
import pytest

from tests.e2e.test_supervisor_e2e import alive, processes_of, running_status, start

pytestmark = pytest.mark.slow


def test_real_worker_lifecycle_and_sigkill_mid_stream(make_ctl):
    ctl = make_ctl(real=True)
    result = start(ctl)
    assert f"export OPENAI_BASE_URL={ctl.url}/v1" in result.stdout
    st, code = ctl.status()
    assert code == 0 and st["state"] == "RUNNING" and st["health"] == "ok"
    assert st["memory"]["active_bytes"] > 0  # reported by the worker's /v1/status
    assert st["worker_rss_bytes"] > 0
    first_worker = st["worker_pid"]

    client = openai.OpenAI(base_url=f"{ctl.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=ctl.model,
        messages=[{"role": "user", "content": "Write a very long story."}],
        max_tokens=4000,
        temperature=1.0,
        stream=True,
    )
    received, finish = 0, None
    for chunk in stream:
        received += 1
        if received == 3:
            os.kill(first_worker, signal.SIGKILL)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    # The front door resumed the stream on the restarted worker: it ends as a whole one does.
    assert received > 3 and finish in ("stop", "length")

    st = running_status(ctl, restarts=1)
    assert st["worker_pid"] != first_worker
    assert "killed by SIGKILL" in ctl.supervisor_log()
    again = client.chat.completions.create(
        model=ctl.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert again.choices[0].message is not None

    sup_pid = st["supervisor_pid"]
    tree = [st["worker_pid"]] + [
        p.pid for p in psutil.Process(st["worker_pid"]).children(recursive=True)
    ]
    ctl.run("stop", check=True)
    assert not alive(sup_pid) and not any(alive(pid) for pid in tree)
    assert processes_of(ctl) == {"supervisor": [], "worker": []}
