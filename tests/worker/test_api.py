"""The worker through the official SDKs: text, tool calls, streaming equal to non-streaming."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from server.testing.scripts import WEATHER_TOOL
from tests.fixtures_worker import API_KEY

HELLO = [{"role": "user", "content": "Say hello."}]
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
BOTH = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
MODEL = "claude-sonnet-4-5"
# This SDK has no sampling arguments; the API still takes temperature.
GREEDY = {"temperature": 0}


def sse_events(response: httpx.Response) -> list[tuple[str | None, dict | str]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            events.append((name, data if data == "[DONE]" else json.loads(data)))
            name = None
    return events


# -- OpenAI ------------------------------------------------------------------------------------


def test_openai_text_reply(openai_client):
    r = openai_client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0)
    assert r.choices[0].message.content == "Hello! How can I help you today?"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_tool_call(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=PARIS, tools=[WEATHER_TOOL], temperature=0
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_openai_stream_tool_calls_and_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=BOTH,
        tools=[WEATHER_TOOL],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking both cities."
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    calls: dict[int, dict] = {}
    for d in deltas:
        entry = calls.setdefault(d.index, {"ids": [], "names": [], "args": ""})
        if d.id:
            entry["ids"].append(d.id)
        if d.function and d.function.name:
            entry["names"].append(d.function.name)
        entry["args"] += (d.function.arguments or "") if d.function else ""
    # id and name exactly once per call, in its first delta.
    assert [c["names"] for c in calls.values()] == [["get_weather"], ["get_weather"]]
    assert all(len(c["ids"]) == 1 for c in calls.values())
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "Tokyo"}]
    first = {d.index: d for d in reversed(deltas)}
    assert all(first[i].id and first[i].function.name for i in first)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_openai_tool_result_history(openai_client):
    messages = PARIS + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = openai_client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], temperature=0
    )
    assert r.choices[0].message.content == "It is sunny and 21 C in Paris."


def test_openai_stream_equals_non_stream(openai_client):
    kwargs = dict(model=MODEL, messages=HELLO, temperature=0, max_tokens=5)
    whole = openai_client.chat.completions.create(**kwargs)
    chunks = list(openai_client.chat.completions.create(**kwargs, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "length"


def test_openai_stop_sequence(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, stop=["help"]
    )
    assert r.choices[0].message.content == "Hello! How can I "
    assert r.choices[0].finish_reason == "stop"


# -- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_text_reply(anthropic_client):
    m = anthropic_client.messages.create(
        model=MODEL, max_tokens=64, messages=HELLO, extra_body=GREEDY
    )
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "Hello! How can I help you today?"
    assert m.stop_reason == "end_turn"
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


def test_anthropic_tool_use_stream_equals_non_stream(anthropic_client):
    kwargs = dict(
        model=MODEL, max_tokens=64, messages=BOTH, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    )
    whole = anthropic_client.messages.create(**kwargs)
    with anthropic_client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert whole.stop_reason == final.stop_reason == "tool_use"
    assert [b.type for b in whole.content] == ["text", "tool_use", "tool_use"]
    assert whole.content[0].text == "Checking both cities."
    assert [b.input for b in whole.content[1:]] == [{"city": "Paris"}, {"city": "Tokyo"}]
    strip = lambda m: [b.model_dump(exclude={"id"}) for b in m.content]  # noqa: E731
    assert strip(final) == strip(whole)
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_anthropic_tool_result_history(anthropic_client):
    messages = PARIS + [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "call the tool", "signature": "x"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny, 21 C"}],
                }
            ],
        },
    ]
    m = anthropic_client.messages.create(
        model=MODEL, max_tokens=64, messages=messages, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    )
    assert m.content[0].text == "It is sunny and 21 C in Paris."


def test_anthropic_stream_grammar(worker):
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "messages": BOTH,
        "tools": [ANTHROPIC_TOOL],
        "temperature": 0,
        "stream": True,
        "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "some_future_field": 1,
    }
    with httpx.stream(
        "POST",
        worker.base_url + "/v1/messages?beta=true",
        json=body,
        headers={"x-api-key": API_KEY, "anthropic-beta": "x"},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        events = sse_events(r)
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0
    open_index, seen = None, []
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None
            open_index = data["index"]
            seen.append(open_index)
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert seen == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_count_tokens_matches_usage(anthropic_client):
    kwargs = dict(model=MODEL, messages=PARIS, tools=[ANTHROPIC_TOOL], system="Be brief.")
    counted = anthropic_client.messages.count_tokens(**kwargs)
    m = anthropic_client.messages.create(**kwargs, max_tokens=1)
    assert counted.input_tokens == m.usage.input_tokens + m.usage.cache_read_input_tokens


def test_tool_choice_named_forces_call(anthropic_client):
    # The scripted model writes this call's text once the reply is forced to open it.
    m = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=PARIS,
        tools=[ANTHROPIC_TOOL],
        extra_body=GREEDY,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert m.stop_reason == "tool_use"
    [call] = [b for b in m.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})


# -- admin endpoints ---------------------------------------------------------------------------


def test_models_status_metrics(worker, openai_client, anthropic_client):
    ids = [m.id for m in openai_client.models.list()]
    # The model's name and ids a model picker keeps; never the absolute path.
    assert ids[0] == Path(worker_model(worker)).name and "claude-sonnet-4-5" in ids
    assert not any(i.startswith("/") for i in ids)
    assert openai_client.models.retrieve(ids[0]).id == ids[0]
    assert anthropic_client.models.retrieve("claude-opus-4-1").id == "claude-opus-4-1"
    headers = {"authorization": f"Bearer {API_KEY}"}
    status = httpx.get(worker.base_url + "/v1/status", headers=headers).json()
    assert status["pid"] == worker.process.pid
    assert status["backend"] in ("cpu", "metal", "cuda") and status["cache"] is None
    assert status["memory"]["rss_bytes"] > 0 and status["queue_depth"] == 0
    assert status["requests"]["total"] >= 1
    text = httpx.get(worker.base_url + "/metrics", headers=headers).text
    assert "# TYPE mlxctl_requests_total counter" in text
    assert 'mlxctl_requests_total{endpoint="/v1/chat/completions"}' in text


def worker_model(worker):
    args = worker.process.args
    return args[args.index("--model") + 1]


def test_claude_code_billing_header_does_not_change_the_prompt(anthropic_client):
    # The header changes between sessions; it is dropped so it cannot break prefix reuse.
    system = [{"type": "text", "text": "Be brief."}]
    header = {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.436;"}
    plain = anthropic_client.messages.count_tokens(model=MODEL, messages=HELLO, system=system)
    tagged = anthropic_client.messages.count_tokens(
        model=MODEL, messages=HELLO, system=[header, *system]
    )
    assert plain.input_tokens == tagged.input_tokens
