"""`mlxctl cache` with several models by name: a real supervisor, the default model and `fast`
on real workers (tiny models), each with its own cache. One service is shared; in order."""

from __future__ import annotations

import json

import openai
import pytest

from mlxctl.system.processes import free_port
from tests.fixtures_supervisor import _make

pytestmark = pytest.mark.slow
MIB = 1024**2

FAST = """
[cache]
ram_bytes = {ram}

[models.fast]
path = "{path}"
aliases = ["claude-haiku-*"]

[models.fast.cache]
ram_bytes = {ram}
"""


@pytest.fixture(scope="module")
def door(tmp_path_factory, tiny_model_path):
    ctl = _make(tmp_path_factory.mktemp("cache-models"), "", str(tiny_model_path))
    ctl.env.pop("MLXCTL_WORKER_COMMAND")  # the real worker, named by its entry
    config = ctl.home / "config.toml"
    config.write_text(config.read_text() + FAST.format(path=tiny_model_path, ram=16 * MIB))
    ctl.run("start", "--port", str(free_port()), check=True, timeout=300)
    ctl.url = ctl.status()[0]["url"]
    yield ctl
    ctl.run("stop", "--timeout", "2", timeout=120)


def say(ctl, model: str, tag: str) -> None:
    client = openai.OpenAI(base_url=f"{ctl.url}/v1", api_key="none", max_retries=0, timeout=300)
    words = " ".join(f"{tag}{i}" for i in range(80))  # long enough to be worth caching
    client.chat.completions.create(
        model=model, max_tokens=3, messages=[{"role": "user", "content": words}]
    )


def cache(ctl, *args: str) -> dict:
    result = ctl.run("cache", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def listed(ctl, model: str) -> list[dict]:
    return cache(ctl, "ls", "--model", model)["entries"]


def test_each_models_entries_by_name_and_all_together(door):
    say(door, "claude-haiku-4-5", "fast")  # fast's alias: its worker starts for it
    say(door, door.model, "default")
    fast = door.wait_for(lambda: listed(door, "fast"), timeout=30, what="fast's entries")
    assert all(e["served_model"] == "fast" for e in fast)
    default = door.wait_for(lambda: listed(door, door.model), timeout=30, what="the default's")
    assert all(e["served_model"] == door.model for e in default)
    assert not {e["id"] for e in fast} & {e["id"] for e in default}

    every = cache(door, "ls")
    assert {e["served_model"] for e in every["entries"]} == {"fast", door.model}
    assert [m["name"] for m in every["models"]] == [door.model, "fast"]
    assert every["source"] == "worker"  # both run: each listed by its own worker

    stats = cache(door, "stats")
    per_model = {m["name"]: m for m in stats["models"]}
    assert set(per_model) == {door.model, "fast"}
    assert stats["ram"]["entries"] == sum(m["ram"]["entries"] for m in per_model.values())
    assert stats["ram"]["budget_bytes"] == 2 * 16 * MIB

    table = door.run("cache", "ls", "--model", "claude-haiku-4-5")  # by alias, as a table
    assert table.returncode == 0 and "fast" in table.stdout and door.model[:12] not in table.stdout
    shown = door.run("cache", "stats")
    assert shown.returncode == 0, shown.stderr
    assert "fast: lookups:" in shown.stdout and f"{door.model}: lookups:" in shown.stdout

    assert cache(door, "why")["served_model"] == door.model  # the newest request of all
    assert cache(door, "why", "--model", "fast")["prompt_tokens"] > 80

    unknown = door.run("cache", "ls", "--model", "nobody")
    assert unknown.returncode == 1
    assert "no served model is named 'nobody'" in unknown.stderr and "fast" in unknown.stderr


def test_clearing_one_model_leaves_the_others_cache(door):
    fast = listed(door, "fast")
    kept = listed(door, door.model)
    assert fast and kept
    refused = door.run("cache", "clear")  # every model's, but nobody to say yes
    assert refused.returncode == 1 and "--yes" in refused.stderr
    preview = door.run("cache", "clear", "--dry-run")
    assert "fast: would free" in preview.stdout and f"{door.model}: would free" in preview.stdout
    assert len(listed(door, "fast")) == len(fast)
    done = cache(door, "clear", "--model", "fast", "--yes")
    assert done["model"] == "fast" and done["entries"] == len(fast)
    assert done["freed_bytes"] > 0
    assert listed(door, "fast") == []
    assert {e["id"] for e in listed(door, door.model)} == {e["id"] for e in kept}
