"""A resumed reply on a real worker: the front door's token marks, and a request re-sent with
the tokens a dead worker had sampled gives the reply the uninterrupted request gives (greedy),
its replayed events included, with the grammar, max_tokens and the reasoning budget going on
from there; a Responses reply keeps the ids its client already has, and is stored under them."""

from __future__ import annotations

import json

import httpx
import pytest

from server.edge.resume_wire import MARK_PREFIX, RESUMABLE_HEADER, RESUME_KEY, RESUME_RESPONSE_KEY
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, MODEL
from tests.worker.test_thinking import private_home
from tests.worker.test_thinking_cache import TEMPLATE

STORY = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
MARKED = {RESUMABLE_HEADER: "1", "x-api-key": API_KEY, "authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def worker(tiny_model_path):
    handle = start_worker(tiny_model_path, api_key=API_KEY)
    yield handle
    handle.stop()


def streamed(worker, path: str, body: dict, headers: dict = MARKED) -> tuple[list[int], list]:
    """The stream's marked token ids and its events' JSON data, in order."""
    tokens, datas = [], []
    url = worker.base_url + path
    with httpx.stream("POST", url, json=body, headers=headers, timeout=300) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith(MARK_PREFIX):
                tokens += [int(t) for t in line[len(MARK_PREFIX) :].split(",")]
            elif line.startswith("data: ") and line != "data: [DONE]":
                datas.append(json.loads(line[len("data: ") :]))
    return tokens, datas


def anthropic_reply(datas: list) -> tuple[str, str, dict]:
    """(text, tool input JSON, output tokens and stop reason) of an Anthropic stream (the
    prompt's usage differs: the prefix cache holds it the second time)."""
    text = "".join(d["delta"].get("text", "") for d in datas if d["type"] == "content_block_delta")
    tool = "".join(
        d["delta"].get("partial_json", "") for d in datas if d["type"] == "content_block_delta"
    )
    end = next(d for d in datas if d["type"] == "message_delta")
    return (
        text,
        tool,
        {"output": end["usage"]["output_tokens"], "stop": end["delta"]["stop_reason"]},
    )


def test_a_resumed_anthropic_stream_replays_and_goes_on_as_the_whole_one(worker):
    body = {"model": MODEL, "max_tokens": 40, "temperature": 0, "stream": True, "messages": STORY}
    tokens, whole = streamed(worker, "/v1/messages", body)
    assert len(tokens) == 40  # every token marked once (ended by max_tokens)
    resumed_tokens, resumed = streamed(worker, "/v1/messages", {**body, RESUME_KEY: tokens[:17]})
    assert resumed_tokens == tokens  # the replay marks the resumed ones again
    assert anthropic_reply(resumed) == anthropic_reply(whole)
    assert resumed[0]["type"] == "message_start"  # replayed from the reply's start


def test_max_tokens_counts_the_resumed_tokens(worker):
    body = {"model": MODEL, "max_tokens": 12, "temperature": 0, "stream": True, "messages": STORY}
    tokens, whole = streamed(worker, "/v1/messages", body)
    _, resumed = streamed(worker, "/v1/messages", {**body, RESUME_KEY: tokens})  # all 12
    text, _, end = anthropic_reply(resumed)
    assert (text, end) == anthropic_reply(whole)[::2]
    assert end == {"output": 12, "stop": "max_tokens"}


def test_a_forced_call_cut_in_its_arguments_goes_on_in_its_grammar(worker):
    body = {
        "model": MODEL,
        "max_tokens": 48,
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [ANTHROPIC_TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    tokens, whole = streamed(worker, "/v1/messages", body)
    _, tool, _ = anthropic_reply(whole)
    assert "city" in json.loads(tool)
    cut = len(tokens) // 2  # inside the arguments
    _, resumed = streamed(worker, "/v1/messages", {**body, RESUME_KEY: tokens[:cut]})
    assert anthropic_reply(resumed) == anthropic_reply(whole)


def test_a_resumed_openai_stream_gives_the_same_content(worker):
    body = {
        "model": MODEL,
        "max_tokens": 30,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": STORY,
    }
    tokens, whole = streamed(worker, "/v1/chat/completions", body)
    _, resumed = streamed(worker, "/v1/chat/completions", {**body, RESUME_KEY: tokens[:9]})

    def content(datas):
        deltas = [c["delta"].get("content") or "" for d in datas for c in d["choices"]]
        return "".join(deltas), datas[-1]["usage"]["completion_tokens"]

    assert content(resumed) == content(whole)


def test_an_unmarked_request_has_no_marks_and_a_bad_resume_is_a_400(worker):
    body = {"model": MODEL, "max_tokens": 5, "temperature": 0, "stream": True, "messages": STORY}
    tokens, datas = streamed(worker, "/v1/messages", body, headers={"x-api-key": API_KEY})
    assert tokens == [] and datas[-1]["type"] == "message_stop"
    bad = {**body, RESUME_KEY: ["a"]}
    reply = httpx.post(worker.base_url + "/v1/messages", json=bad, headers=MARKED, timeout=60)
    assert reply.status_code == 400 and RESUME_KEY in reply.json()["error"]["message"]


def responses_reply(datas: list) -> tuple[str, str, str]:
    """(reasoning, text, status and output tokens) of a Responses stream."""
    summary = "".join(
        d["delta"] for d in datas if d["type"] == "response.reasoning_summary_text.delta"
    )
    text = "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta")
    end = datas[-1]["response"]
    return summary, text, f"{end['status']} {end['usage']['output_tokens']}"


def test_a_resumed_responses_stream_keeps_the_clients_ids_and_is_stored_under_them(worker):
    body = {"model": MODEL, "max_output_tokens": 30, "temperature": 0, "stream": True,
            "input": "Tell me a story about a lighthouse."}  # fmt: skip
    tokens, whole = streamed(worker, "/v1/responses", body)
    assert len(tokens) == 30
    ids = {"id": "resp_theclients1", "created_at": 7, "items": ["msg_theclients1"]}
    resumed_body = {**body, RESUME_KEY: tokens[:9], RESUME_RESPONSE_KEY: ids}
    _, resumed = streamed(worker, "/v1/responses", resumed_body)
    assert responses_reply(resumed)[1:] == responses_reply(whole)[1:]
    final = resumed[-1]["response"]
    assert (final["id"], final["created_at"]) == ("resp_theclients1", 7)
    assert [item["id"] for item in final["output"]] == ["msg_theclients1"]
    assert {d["item_id"] for d in resumed if "item_id" in d} == {"msg_theclients1"}
    stored = httpx.get(worker.base_url + "/v1/responses/resp_theclients1", headers=MARKED)
    assert stored.status_code == 200 and stored.json()["output"] == final["output"]
    bad = {**resumed_body, RESUME_RESPONSE_KEY: {**ids, "id": "../x"}}
    reply = httpx.post(worker.base_url + "/v1/responses", json=bad, headers=MARKED, timeout=60)
    assert reply.status_code == 400 and RESUME_RESPONSE_KEY in reply.json()["error"]["message"]


@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    """A tiny model whose template opens `<think>`: every reply starts in reasoning, which a
    random model never closes itself (the reasoning budget closes it). Seed 3: greedy, its
    reasoning and answer are not one token repeated."""
    handle = start_worker(tiny_model(template=TEMPLATE, seed=3), env=private_home(tmp_path_factory),
                          api_key=API_KEY)  # fmt: skip
    yield handle
    handle.stop()


def anthropic_thinking(datas: list) -> tuple[str, str, dict]:
    thinking = "".join(
        d["delta"].get("thinking", "") for d in datas if d["type"] == "content_block_delta"
    )
    text, _, end = anthropic_reply(datas)
    return thinking, text, end


# Cut inside the reasoning, at the budget (the next token is the forced end), and after it.
@pytest.mark.parametrize("cut", [2, 6, 9])
def test_a_thinking_reply_resumes_with_its_reasoning_and_budget_intact(thinker, cut):
    enabled = {"type": "enabled", "budget_tokens": 6}
    body = {"model": MODEL, "max_tokens": 20, "temperature": 0, "stream": True,
            "messages": STORY, "thinking": enabled}  # fmt: skip
    tokens, whole = streamed(thinker, "/v1/messages", body)
    thinking, text, _ = anthropic_thinking(whole)
    assert thinking and text  # the budget closed the reasoning, and the answer came
    _, resumed = streamed(thinker, "/v1/messages", {**body, RESUME_KEY: tokens[:cut]})
    assert anthropic_thinking(resumed) == anthropic_thinking(whole)
    # Responses: no budget field; the worker's cap leaves a quarter of the limit to the answer.
    body = {"model": MODEL, "max_output_tokens": 20, "temperature": 0, "stream": True,
            "input": "Tell me a story about a lighthouse."}  # fmt: skip
    tokens, whole = streamed(thinker, "/v1/responses", body)
    reasoning, text, _ = responses_reply(whole)
    assert reasoning and text
    _, resumed = streamed(thinker, "/v1/responses", {**body, RESUME_KEY: tokens[: cut + 9]})
    assert responses_reply(resumed) == responses_reply(whole)
