"""The supervisor runs one model over two ranks (`mlxctl start --ranks 2`: the worker under
mlx.launch on loopback) as one unit: status shows each rank, and a rank's death restarts the
whole group."""

from __future__ import annotations

import os
import signal

import openai
import pytest

from tests.e2e.test_supervisor_e2e import alive, processes_of, start
from tests.fixtures_supervisor import REAL_WORKER, _make, _teardown

pytestmark = pytest.mark.slow


@pytest.fixture
def ranks_ctl(tmp_path, tiny_model_path):
    ctl = _make(tmp_path, REAL_WORKER, str(tiny_model_path))
    ctl.env.pop("MLXCTL_WORKER_COMMAND")  # the worker command of the contract: mlx.launch
    yield ctl
    _teardown(ctl)


def ranks_running(ctl, restarts: int) -> dict:
    """`status --json` once RUNNING and healthy after `restarts` restarts, with both ranks."""

    def check():
        st, _ = ctl.status()
        # At least: under load a restart can need a second try (the old group's ports freeing).
        ok = st["state"] == "RUNNING" and st["health"] == "ok" and st["restarts"] >= restarts
        return st if ok and len(st["ranks"]) == 2 else None

    return ctl.wait_for(check, timeout=240, every=0.5, what=f"2 ranks after {restarts} restarts")


def test_two_ranks_run_as_one_unit_and_a_dead_rank_restarts_the_group(ranks_ctl):
    ctl = ranks_ctl
    start(ctl, "--ranks", "2")
    st = ranks_running(ctl, restarts=0)
    assert [r["rank"] for r in st["ranks"]] == [0, 1]
    assert all(r["host"] and r["pid"] > 0 and r["rss_bytes"] > 0 for r in st["ranks"])
    assert st["worker_rss_bytes"] > sum(r["rss_bytes"] for r in st["ranks"])  # the whole group
    pids = [r["pid"] for r in st["ranks"]]
    assert st["worker_pid"] not in pids  # the group's leader is the launcher

    client = openai.OpenAI(base_url=f"{ctl.url}/v1", api_key="unused", max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    before = client.chat.completions.create(
        model=ctl.model, messages=hi, max_tokens=6, temperature=0
    )

    os.kill(pids[1], signal.SIGKILL)
    again = ranks_running(ctl, restarts=1)
    # Rank 0's next collective fails: its /health says why at once and the group restarts; if
    # the launcher exits first, it reports the failed rank (mlx.launch alone would exit 0).
    said = (ctl.home / "logs" / "supervisor.log").read_text()
    assert "peer was lost" in said or "code 1" in said, said
    assert not any(alive(pid) for pid in pids)  # rank 0 went down with rank 1
    assert {r["pid"] for r in again["ranks"]}.isdisjoint(pids)
    after = client.chat.completions.create(
        model=ctl.model, messages=hi, max_tokens=6, temperature=0
    )
    assert after.choices[0].message.content == before.choices[0].message.content

    ctl.run("stop", check=True, timeout=120)
    assert processes_of(ctl) == {"supervisor": [], "worker": []}
    assert not any(alive(r["pid"]) for r in again["ranks"])


def test_pipeline_on_a_model_without_stages_is_refused_with_the_reason(tmp_path):
    from tests.conftest import tiny_model

    sliding = tiny_model(family="gemma3_text")  # neither model.shard nor pipeline stages
    ctl = _make(tmp_path, REAL_WORKER, str(sliding))
    ctl.env.pop("MLXCTL_WORKER_COMMAND")
    try:
        result = ctl.run("start", "--ranks", "2", "--parallel", "pipeline", timeout=300)
        assert result.returncode != 0
        st, _ = ctl.status()
        assert st["state"] == "FATAL" and st["restarts"] == 0  # a retry would fail the same way
        assert "does not support pipelining" in st["fatal_reason"]
        assert "does not support pipelining" in result.stdout + result.stderr
    finally:
        _teardown(ctl)
    assert processes_of(ctl) == {"supervisor": [], "worker": []}


def test_a_wedged_rank_restarts_the_group_even_when_idle(ranks_ctl):
    ctl = ranks_ctl
    ctl.run("config", "set", "restart.progress_timeout", "5", check=True)
    start(ctl, "--ranks", "2")
    st = ranks_running(ctl, restarts=0)
    wedged = st["ranks"][1]["pid"]
    os.kill(wedged, signal.SIGSTOP)  # alive, but it never answers rank 0's next exchange
    again = ranks_running(ctl, restarts=1)
    assert not alive(wedged) and wedged not in [r["pid"] for r in again["ranks"]]
    assert "no progress" in ctl.supervisor_log()  # the watchdog's reason, through /health
