"""Several models by name end to end: a real supervisor, real workers on tiny models, real HTTP
and the official SDKs through the front door. One service is shared; the tests run in order."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from mlxctl.system.processes import free_port
from tests.fixtures_supervisor import _make

pytestmark = pytest.mark.slow
MIB = 1024**2

MODELS = """
[cache]
ram_bytes = {small}

[memory]
models_budget = {budget}

[models.fast]
path = "{path}"
aliases = ["claude-haiku-*", "gpt-4o-mini"]
idle_unload = "8s"

[models.fast.cache]
ram_bytes = {small}

[models.slow]
path = "{path}"
aliases = ["claude-opus-*"]

[models.slow.cache]
ram_bytes = {medium}

[models.other]
path = "{path}"

[models.other.cache]
ram_bytes = {medium}

[models.huge]
path = "{path}"

[models.huge.cache]
ram_bytes = {huge}
"""


@pytest.fixture(scope="module")
def door(tmp_path_factory, tiny_model_path):
    """The default model plus four by name, within a budget that holds the default and one of
    `slow` and `other` (never `huge`)."""
    ctl = _make(tmp_path_factory.mktemp("models"), "", str(tiny_model_path))
    ctl.env.pop("MLXCTL_WORKER_COMMAND")  # the real worker, named by its entry
    weights = sum(f.stat().st_size for f in tiny_model_path.rglob("*") if f.is_file())
    small, medium = 4 * MIB, 64 * MIB
    budget = 3 * weights + 2 * small + medium + 32 * MIB
    config = ctl.home / "config.toml"
    entries = MODELS.format(path=tiny_model_path, small=small, medium=medium, huge=4096 * MIB,
                            budget=budget)  # fmt: skip
    config.write_text(config.read_text() + entries)
    ctl.given = free_port()
    ctl.run("start", "--port", str(ctl.given), check=True)
    ctl.url = f"http://127.0.0.1:{ctl.given}"
    yield ctl
    ctl.run("stop", "--timeout", "2", timeout=120)


def oai(ctl) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ctl.url}/v1", api_key="none", max_retries=0, timeout=300)


def claude(ctl) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=ctl.url, api_key="none", max_retries=0, timeout=300)


def rows(ctl) -> dict[str, dict]:
    status, code = ctl.status()
    assert code == 0, status
    return {row["name"]: row for row in status["models"]}


def say(ctl, model: str) -> str:
    reply = oai(ctl).chat.completions.create(
        model=model, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.model


def test_an_unknown_model_is_each_protocols_404(door):
    with pytest.raises(openai.NotFoundError) as caught:
        say(door, "gpt-5")
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["code"] == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as refused:
        claude(door).messages.create(
            model="nobody", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body["error"]["type"] == "not_found_error"
    assert refused.value.body["type"] == "error"


def test_a_second_model_starts_on_its_first_request_which_waits_for_it(door):
    assert rows(door)["fast"]["state"] == "stopped"  # nothing starts with the service
    with claude(door).messages.stream(
        model="claude-haiku-4-5", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason in ("max_tokens", "end_turn")
    assert say(door, "gpt-4o-mini") == "fast"  # an alias the worker does not know: renamed
    assert say(door, "claude-sonnet-4-5") == "claude-sonnet-4-5"  # any other claude-*: default
    count = claude(door).messages.count_tokens(
        model="fast", messages=[{"role": "user", "content": "hi"}]
    )
    assert count.input_tokens > 0
    fast = door.wait_for(lambda: (r := rows(door)["fast"])["requests"] == 3 and r, timeout=10)
    assert fast["state"] == "running" and fast["worker"]
    assert (door.home / "logs" / "worker-fast.log").exists()


def test_v1_models_lists_every_model_with_its_aliases_and_state(door):
    say(door, "fast")  # running for its idle time (8 s) from here, however slow the machine
    listed = httpx.get(f"{door.url}/v1/models").json()
    by_id = {m["id"]: m for m in listed["data"]}
    assert set(by_id) == {door.model, "fast", "slow", "other", "huge"}
    assert by_id["fast"]["aliases"] == ["claude-haiku-*", "gpt-4o-mini"]
    assert by_id["fast"]["state"] == "running" and by_id["slow"]["state"] == "stopped"
    assert [m.id for m in oai(door).models.list()][0] == door.model
    assert httpx.get(f"{door.url}/v1/models/gpt-4o-mini").json()["id"] == "fast"
    assert httpx.get(f"{door.url}/v1/models/gpt-5").status_code == 404


def test_status_shows_one_row_per_model(door):
    say(door, "fast")
    status, _ = door.status()
    names = [row["name"] for row in status["models"]]
    assert names == [door.model, "fast", "slow", "other", "huge"]
    default = status["models"][0]
    assert default["default"] and default["state"] == "running" and default["requests"] >= 1
    assert default["rss_bytes"] and status["models"][1]["rss_bytes"]
    shown = door.run("status").stdout
    assert "fast" in shown and "huge" in shown


def test_an_idle_model_unloads_after_its_idle_time(door):
    say(door, "fast")
    pid = rows(door)["fast"]["worker"]["pid"]
    door.wait_for(lambda: rows(door)["fast"]["state"] == "idle-unloaded", timeout=60)
    assert rows(door)["fast"]["worker"] is None
    assert "[fast] unloading: idle for" in door.supervisor_log()
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_budget_stops_the_least_recently_used_idle_model_first(door):
    assert say(door, "slow") == "slow"
    assert say(door, "other") == "other"  # slow and other do not fit together
    models = rows(door)
    assert models["other"]["state"] == "running" and models["slow"]["state"] == "stopped"
    assert "[slow] unloading: to make room for other" in door.supervisor_log()
    assert models[door.model]["state"] == "running"  # the default is never unloaded


def test_a_model_that_cannot_fit_is_a_clear_503(door):
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude(door).messages.create(
            model="huge", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 503
    assert refused.value.body["error"]["type"] == "overloaded_error"
    assert "memory.models_budget" in refused.value.body["error"]["message"]
    with pytest.raises(openai.InternalServerError) as caught:
        say(door, "huge")
    assert caught.value.status_code == 503 and "not enough memory" in caught.value.body["message"]
    assert rows(door)["other"]["state"] == "running"  # nothing else was stopped for it


def test_a_killed_supervisor_takes_every_models_worker_along(door):
    import os
    import signal

    import psutil

    status, _ = door.status()
    pid = rows(door)["other"]["pid"]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    gone = lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"  # noqa: E731
    door.wait_for(gone, timeout=30, what="the other model's worker gone")
    door.run("start", "--port", str(door.given), check=True)
    assert say(door, "other") == "other"  # served again, started on demand
    assert rows(door)["other"]["pid"] != pid
