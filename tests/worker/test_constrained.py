"""Constrained tool calls end to end: a real worker, both SDKs, streamed and not.

A random-weight model forced to call Claude Code's own tools always returns a call whose
arguments validate against the tool's schema; `auto` constrains a call the model opens; a
schema that cannot be enforced is a 400 in each protocol's error shape.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from server.testing.scripts import WEATHER_TOOL
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, MODEL, PARIS

PICKED = ["Read", "Edit", "Bash", "Write", "ReportFindings"]
GO = [{"role": "user", "content": "Go on."}]
SEEDS = range(20)
MAX_TOKENS = 64  # short replies keep it affordable; calls still close inside the budget


@pytest.fixture(scope="module")
def random_worker(tiny_model_path):
    # The prefix cache keeps the tools' prompt: each request prefills a few tokens only.
    handle = start_worker(tiny_model_path, api_key=API_KEY)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def claude_tools(claude_code_requests):
    """The fixture's tools with their schemas as sent (tool descriptions dropped: prompt size)."""
    return [
        {"name": t["name"], "input_schema": t["input_schema"]}
        for t in claude_code_requests[0]["body"]["tools"]
    ]


def openai_tools(tools):
    return [
        {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
        for t in tools
    ]


def schema(tools, name):
    return next(t["input_schema"] for t in tools if t["name"] == name)


def anthropic(worker):
    from anthropic import Anthropic

    return Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def anthropic_message(client, stream: bool, **kwargs):
    """The final message of one Anthropic request, streamed or not."""
    if stream:
        with client.messages.stream(**kwargs) as events:
            return events.get_final_message()
    return client.messages.create(**kwargs)


def openai(worker):
    from openai import OpenAI

    return OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_forced_calls_always_validate(random_worker, claude_tools, stream, temperature):
    with anthropic(random_worker) as client:
        for seed in SEEDS:
            name = PICKED[seed % len(PICKED)]
            kwargs = dict(
                model=MODEL,
                max_tokens=MAX_TOKENS,
                messages=GO,
                tools=claude_tools,
                tool_choice={"type": "tool", "name": name},
                extra_body={"temperature": temperature},  # this SDK has no sampling arguments
            )
            message = anthropic_message(client, stream, **kwargs)
            assert message.content and {b.type for b in message.content} == {"tool_use"}
            assert message.stop_reason in ("tool_use", "max_tokens")  # max: closed early
            for block in message.content:
                assert block.name == name
                jsonschema.validate(block.input, schema(claude_tools, name))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_forced_calls_always_validate(random_worker, claude_tools, stream, temperature):
    tools = openai_tools(claude_tools)
    with openai(random_worker) as client:
        for seed in SEEDS:
            name = PICKED[seed % len(PICKED)]
            kwargs = dict(
                model="claude-x",
                max_tokens=MAX_TOKENS,
                messages=GO,
                tools=tools,
                tool_choice={"type": "function", "function": {"name": name}},
                temperature=temperature,
                seed=seed,  # seeded: these run on the one-at-a-time path
            )
            if stream:
                calls, finish = {}, None
                for chunk in client.chat.completions.create(**kwargs, stream=True):
                    choice = chunk.choices[0]
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        entry = calls.setdefault(delta.index, {"name": None, "arguments": ""})
                        entry["name"] = entry["name"] or delta.function.name
                        entry["arguments"] += delta.function.arguments or ""
                got = [(c["name"], c["arguments"]) for c in calls.values()]
            else:
                r = client.chat.completions.create(**kwargs)
                finish = r.choices[0].finish_reason
                got = [
                    (c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls
                ]
            assert got and finish in ("tool_calls", "length")
            for called, arguments in got:
                assert called == name
                jsonschema.validate(json.loads(arguments), schema(claude_tools, name))


def test_required_calls_one_of_the_tools(random_worker, claude_tools):
    names = {t["name"] for t in claude_tools}
    with anthropic(random_worker) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=MAX_TOKENS,
            messages=GO,
            tools=claude_tools,
            tool_choice={"type": "any"},
        )
    [block, *_] = message.content
    assert block.type == "tool_use" and block.name in names
    jsonschema.validate(block.input, schema(claude_tools, block.name))


# The scripted model writes {"city": "Paris"} when it calls; this schema does not allow it.
ENUM_TOOL = copy.deepcopy(ANTHROPIC_TOOL)
ENUM_TOOL["input_schema"]["properties"]["city"] = {"type": "string", "enum": ["Tokyo", "Berlin"]}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_auto_constrains_the_call_the_model_opens(worker, stream):
    from anthropic import Anthropic

    kwargs = dict(model=MODEL, max_tokens=64, messages=PARIS, tools=[ENUM_TOOL])
    kwargs["extra_body"] = {"temperature": 0}
    with Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0) as client:
        if stream:
            with client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(**kwargs)
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input["city"] in ("Tokyo", "Berlin")
    jsonschema.validate(call.input, ENUM_TOOL["input_schema"])


def test_auto_constrains_over_openai_too(worker):
    from openai import OpenAI

    tool = copy.deepcopy(WEATHER_TOOL)
    tool["function"]["parameters"] = ENUM_TOOL["input_schema"]
    with OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0) as client:
        r = client.chat.completions.create(
            model="claude-x", messages=PARIS, tools=[tool], temperature=0, max_tokens=64
        )
    [call] = r.choices[0].message.tool_calls
    assert json.loads(call.function.arguments)["city"] in ("Tokyo", "Berlin")


LOOKBEHIND = {
    "name": "Grep",
    "input_schema": {
        "type": "object",
        "properties": {"q": {"type": "string", "pattern": "(?<=a)b"}},
    },
}


def test_an_uncompilable_schema_is_a_400_naming_tool_and_construct(worker):
    import anthropic as anthropic_sdk
    import openai as openai_sdk

    with anthropic(worker) as client, pytest.raises(anthropic_sdk.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=PARIS,
            tools=[ENUM_TOOL, LOOKBEHIND],
            tool_choice={"type": "any"},
        )
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "'Grep'" in error["message"] and "look-around" in error["message"]
    with openai(worker) as client, pytest.raises(openai_sdk.BadRequestError) as caught:
        client.chat.completions.create(
            model="claude-x",
            max_tokens=8,
            messages=PARIS,
            tools=openai_tools([LOOKBEHIND]),
        )
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == "tools"
    assert "'Grep'" in error["message"] and "look-around" in error["message"]


def test_disable_parallel_tool_use_makes_one_call(random_worker, claude_tools):
    with anthropic(random_worker) as client:
        for seed in range(4):
            message = client.messages.create(
                model=MODEL,
                max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": f"Read file {seed}."}],
                tools=claude_tools,
                tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
                extra_body={"temperature": 1.0},
            )
            assert len(message.content) == 1, message.content
            [block] = message.content
            assert block.type == "tool_use" and block.name == "Read"
            jsonschema.validate(block.input, schema(claude_tools, "Read"))


def test_constrained_arguments_stream_as_they_are_generated(random_worker, claude_tools):
    import httpx

    from tests.worker.test_api import sse_events

    body = {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "messages": GO,
        "tools": claude_tools,
        "tool_choice": {"type": "tool", "name": "Write"},
        "temperature": 1,
    }
    headers = {"x-api-key": API_KEY}
    url = random_worker.base_url + "/v1/messages"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=300) as response:
        events = sse_events(response)
    names = [name for name, _ in events]
    start = names.index("content_block_start")
    assert events[start][1]["content_block"]["name"] == "Write"
    pieces = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert len(pieces) > 5  # piece by piece, not one blob at the end
    jsonschema.validate(json.loads("".join(pieces)), schema(claude_tools, "Write"))
    assert names.index("content_block_stop") > names.index("content_block_delta")
    chat = {**body, "tools": openai_tools(claude_tools), "stream": True}
    chat["tool_choice"] = {"type": "function", "function": {"name": "Write"}}
    with httpx.stream(
        "POST",
        random_worker.base_url + "/v1/chat/completions",
        json=chat,
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=300,
    ) as response:
        chunks = [data for _, data in sse_events(response) if data != "[DONE]"]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    pieces = [d[0]["function"]["arguments"] for d in calls if d and "id" not in d[0]]
    assert [d[0]["function"]["name"] for d in calls if d and "id" in d[0]] == ["Write"]
    assert len(pieces) > 5
    jsonschema.validate(json.loads("".join(pieces)), schema(claude_tools, "Write"))


@pytest.fixture(scope="module")
def xml_random_worker():
    from tests.conftest import tiny_model

    handle = start_worker(tiny_model(tool_format="xml"), api_key=API_KEY)
    yield handle
    handle.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_qwen3_coder_xml_forced_calls_validate(xml_random_worker, claude_tools, stream):
    with anthropic(xml_random_worker) as client:
        for seed in range(10):
            name = PICKED[seed % len(PICKED)]
            kwargs = dict(
                model=MODEL,
                max_tokens=96,  # the XML form takes more tokens than JSON
                messages=GO,
                tools=claude_tools,
                tool_choice={"type": "tool", "name": name},
                extra_body={"temperature": [0.0, 1.0][seed % 2]},
            )
            message = anthropic_message(client, stream, **kwargs)
            assert message.content and {b.type for b in message.content} == {"tool_use"}
            for block in message.content:
                assert block.name == name
                jsonschema.validate(block.input, schema(claude_tools, name))


# Budgets from too small for any call to a few tokens over the smallest: the edge where a cut
# call used to come back with `{}` as its input.
TIGHT_BUDGETS = [12, 18, 22, 24, 26, 30, 34, 40, 46]


@pytest.mark.parametrize("name", ["Read", "Edit"])
def test_a_forced_call_under_a_tight_budget_validates_or_is_refused(
    random_worker, claude_tools, name
):
    """Every budget gets a call that validates, or a 400 naming the smallest budget that fits
    (and that budget then gets a valid call)."""
    from anthropic import BadRequestError

    refused: list[int] = []
    with anthropic(random_worker) as client:
        for max_tokens in TIGHT_BUDGETS:
            for temperature in (0.0, 1.0):
                kwargs = dict(
                    model=MODEL,
                    max_tokens=max_tokens,
                    messages=GO,
                    tools=claude_tools,
                    tool_choice={"type": "tool", "name": name},
                    extra_body={"temperature": temperature},
                )
                try:
                    message = client.messages.create(**kwargs)
                except BadRequestError as exc:
                    error = exc.body["error"]
                    assert error["type"] == "invalid_request_error"
                    assert f"max_tokens {max_tokens}" in error["message"]
                    minimum = int(error["message"].split("at least ")[1].split()[0])
                    assert minimum > max_tokens
                    refused.append(minimum)
                    continue
                assert [b.type for b in message.content] == ["tool_use"], message.content
                jsonschema.validate(message.content[0].input, schema(claude_tools, name))
    assert refused, "the smallest budgets are below any call"
    assert len(set(refused)) == 1  # one minimum per tool and prompt
    with anthropic(random_worker) as client:  # the named minimum is enough
        message = client.messages.create(
            model=MODEL,
            max_tokens=refused[0],
            messages=GO,
            tools=claude_tools,
            tool_choice={"type": "tool", "name": name},
        )
    jsonschema.validate(message.content[0].input, schema(claude_tools, name))


def test_openai_refuses_a_forced_call_that_cannot_fit_max_tokens(random_worker, claude_tools):
    from openai import BadRequestError

    with openai(random_worker) as client, pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model="claude-x",
            max_tokens=8,
            messages=GO,
            tools=openai_tools(claude_tools),
            tool_choice={"type": "function", "function": {"name": "Read"}},
        )
    assert caught.value.body["param"] == "max_tokens"
    assert "at least" in caught.value.body["message"]
