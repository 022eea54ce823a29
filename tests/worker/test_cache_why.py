"""`mlxctl cache why`: names where a prompt left the cache, against the real worker (tiny model)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures_worker import API_KEY

AUTH = {"x-api-key": API_KEY}
BILLING = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.abc;"}


def words(tag: str, count: int = 60) -> str:
    return " ".join(f"{tag}{i}" for i in range(count))


def ask(ctl, system: list[dict], messages: list[dict], tools: list | None = None) -> str:
    body = {"model": "claude-x", "max_tokens": 4, "system": system, "messages": messages}
    if tools:
        body["tools"] = tools
    reply = httpx.post(ctl.url + "/v1/messages", json=body, headers=AUTH, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.headers["x-request-id"]


@pytest.fixture
def ctl(make_ctl):
    ctl = make_ctl(real=True, env={"COLUMNS": "100"})
    config = ctl.home / "config.toml"
    config.write_text(config.read_text().replace("# test config\n", f'api_key = "{API_KEY}"\n'))
    ctl.run("start", check=True, timeout=300)
    return ctl


def why(ctl, *args: str) -> dict:
    result = ctl.run("cache", "why", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_names_the_system_block_and_the_message_that_diverged(ctl):
    system = [BILLING, {"type": "text", "text": words("alpha")},
              {"type": "text", "text": words("beta")}]  # fmt: skip
    hello = [{"role": "user", "content": "hello " + words("gamma", 20)}]
    first = ask(ctl, system, hello)
    changed = [*system[:2], {"type": "text", "text": words("beta").replace("beta30", "CHANGED")}]
    second = ask(ctl, changed, hello)

    report = why(ctl, second[:6])  # a prefix of the id will do
    assert report["request_id"] == second
    assert report["nearest"]["request_id"] == first
    where = report["diverged_at"]
    assert where["segment"] == "system block 2"
    assert 0 < report["cached_tokens"] == where["token"] < report["prompt_tokens"]
    assert "beta29" in where["before"] and "CHANGED" in where["after"]
    assert "beta30" in where["nearest_after"]
    assert "system block 0 holds the billing header: dropped before rendering" in report["notes"]
    names = [s["name"] for s in report["segments"]]
    assert names[:4] == ["the chat template's opening", "system block 1", "system block 2",
                         "message 0 (user)"]  # fmt: skip

    # An edited earlier message: the conversation goes on, but its first turn was changed.
    turns = [*hello, {"role": "assistant", "content": "hi " + words("delta", 20)},
             {"role": "user", "content": "go on " + words("epsilon", 20)}]  # fmt: skip
    third = ask(ctl, changed, turns)
    edited = [{"role": "user", "content": hello[0]["content"].replace("gamma10", "EDITED")},
              *turns[1:]]  # fmt: skip
    fourth = ask(ctl, changed, edited)
    report = why(ctl, "--last")
    assert report["request_id"] == fourth and report["nearest"]["request_id"] == third
    where = report["diverged_at"]
    assert where["segment"] == "message 0 (user)"
    assert "gamma9" in where["before"] and "EDITED" in where["after"]
    assert "gamma10" in where["nearest_after"]

    # A changed tool description: the tools list, and which tool.
    def tool(name: str, text: str) -> dict:
        schema = {"type": "object", "properties": {"path": {"type": "string"}}}
        return {"name": name, "description": text, "input_schema": schema}

    tools = [tool("Bash", words("zeta")), tool("Read", words("eta"))]
    ask(ctl, changed, hello, tools)
    ask(ctl, changed, hello, [tools[0], tool("Read", words("eta").replace("eta40", "NEWDOC"))])
    where = why(ctl)["diverged_at"]
    assert where["segment"] == "the tools list (tool Read)"
    assert "NEWDOC" in where["after"] and "eta40" in where["nearest_after"]

    # What people read: one line each, the block named, both sides shown.
    shown = ctl.run("cache", "why", second)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"request {second} (anthropic, ")
    assert f"nearest earlier request {first} shares" in lines[1]
    assert "in system block 2 (tokens" in lines[2] and "tokens prefilled" in lines[2]
    assert lines[3].startswith("  before   ") and "beta29" in lines[3]
    assert lines[4].startswith("  this     ") and "CHANGED" in lines[4]
    assert lines[5].startswith("  earlier  ") and "beta30" in lines[5]
    assert "note: system block 0 holds the billing header" in shown.stderr


def test_why_is_behind_the_key_and_says_when_it_knows_no_such_request(ctl):
    assert httpx.get(ctl.url + "/v1/cache/why", timeout=10).status_code == 401
    result = ctl.run("cache", "why", "nosuchid")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: request 'nosuchid' is not among the last generations this worker keeps",
        "hint: `mlxctl status` lists the recent requests' ids",
    ]


def test_why_without_a_worker(make_ctl):
    result = make_ctl().run("cache", "why", "--last")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: no worker is running",
        "hint: `cache why` asks the worker about its recent requests",
    ]
