"""The OpenAI Responses API on a real worker, through the official SDK's `client.responses`.

The scripted model's known replies give exact text and calls; streams are checked event by
event against the SDK's own event types; bad input gets the Responses error shape.
"""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import openai as openai_sdk
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from server.testing.scripts import WEATHER_TOOL
from tests.fixtures_worker import API_KEY

MODEL = "claude-sonnet-4-5"  # any claude-* name means the loaded model
PARIS = "What is the weather in Paris?"
HELLO = "Say hello."
WEATHER = {"type": "function", **WEATHER_TOOL["function"]}
ANSWER = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
EVENTS = TypeAdapter(ResponseStreamEvent)
HEADERS = {"authorization": f"Bearer {API_KEY}"}


def client_for(worker) -> openai_sdk.OpenAI:
    return openai_sdk.OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def client(worker):
    with client_for(worker) as c:
        yield c


def raw_stream(worker, body: dict) -> list[tuple[str, dict]]:
    """(event line, data) of each SSE event (the worker sends no comments here)."""
    out, name = [], None
    with httpx.stream(
        "POST",
        worker.base_url + "/v1/responses",
        json={**body, "stream": True},
        headers=HEADERS,
        timeout=60,
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert not line.startswith(":"), line
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


def check_grammar(events: list[tuple[str, dict]]) -> Response:
    """Every event parses as the SDK's type, names itself on its `event:` line, numbers rise
    from 0; items open before their deltas and close once; the last event carries the whole
    response, whose output equals the items closed along the way."""
    parsed = [EVENTS.validate_python(data) for _, data in events]
    assert [name for name, _ in events] == [e.type for e in parsed]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert [e.type for e in parsed[:2]] == ["response.created", "response.in_progress"]
    assert parsed[0].response.status == "in_progress" and parsed[0].response.output == []
    open_items: dict[str, int] = {}
    done_items = []
    texts: dict[str, str] = {}
    for e in parsed[2:-1]:
        if e.type == "response.in_progress":  # a keep-alive: the same response, so far
            assert e.response.id == parsed[0].response.id
            assert [i.id for i in e.response.output] == [i.id for i in done_items]
        elif e.type == "response.output_item.added":
            assert e.output_index == len(done_items) and not open_items
            open_items[e.item.id] = e.output_index
        elif e.type == "response.output_item.done":
            assert open_items.pop(e.item.id) == e.output_index
            done_items.append(e.item)
        else:
            assert open_items.get(e.item_id) == e.output_index, e
            if e.type.endswith(".delta"):
                texts[e.item_id] = texts.get(e.item_id, "") + e.delta
    assert not open_items
    last = parsed[-1]
    assert last.type in ("response.completed", "response.incomplete")
    assert [item.model_dump() for item in last.response.output] == [
        item.model_dump() for item in done_items
    ]
    for item in done_items:  # the deltas add up to each finished item
        if item.type == "message":
            assert texts.get(item.id, "") == item.content[0].text
        elif item.type == "function_call":
            assert texts[item.id] == item.arguments
        elif item.type == "custom_tool_call":
            assert texts.get(item.id, "") == item.input
    return last.response


# -- text -----------------------------------------------------------------------------------------


def test_text_reply_whole(client):
    r = client.responses.create(model=MODEL, input=HELLO, temperature=0)
    assert r.output_text == "Hello! How can I help you today?"
    assert r.status == "completed" and r.object == "response"
    [message] = r.output
    assert message.type == "message" and message.role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.store is True  # as OpenAI does: kept unless `store: false`


def test_text_reply_streamed_equals_whole(client, worker):
    whole = client.responses.create(model=MODEL, input=HELLO, temperature=0)
    with client.responses.create(model=MODEL, input=HELLO, temperature=0, stream=True) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == whole.output_text
    final = check_grammar(raw_stream(worker, {"model": MODEL, "input": HELLO, "temperature": 0}))
    assert final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_instructions_and_developer_messages_reach_the_prompt(client):
    plain = client.responses.input_tokens.count(model=MODEL, input=HELLO)
    told = client.responses.input_tokens.count(
        model=MODEL,
        instructions="Answer briefly.",
        input=[
            {"role": "developer", "content": "Use plain words."},
            {"role": "user", "content": [{"type": "input_text", "text": HELLO}]},
        ],
    )
    assert told.object == "response.input_tokens"
    assert told.input_tokens > plain.input_tokens + 6
    r = client.responses.create(model=MODEL, input=HELLO, temperature=0)
    assert plain.input_tokens == r.usage.input_tokens  # the count is the prompt that runs


def test_max_output_tokens_makes_the_response_incomplete(client, worker):
    r = client.responses.create(model=MODEL, input=HELLO, temperature=0, max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3
    body = {"model": MODEL, "input": HELLO, "temperature": 0, "max_output_tokens": 3}
    final = check_grammar(raw_stream(worker, body))
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"


def test_metadata_and_unknown_fields(client):
    r = client.responses.create(
        model=MODEL,
        input=HELLO,
        temperature=0,
        metadata={"run": "7"},
        store=True,
        include=["reasoning.encrypted_content"],
        extra_body={"prompt_cache_key": "abc", "some_future_field": {"x": 1}},
    )
    assert r.metadata == {"run": "7"} and r.store is True
    assert r.output_text == "Hello! How can I help you today?"


# -- tools ----------------------------------------------------------------------------------------


def test_function_call_round_trip(client, worker):
    first = client.responses.create(model=MODEL, input=PARIS, tools=[WEATHER], temperature=0)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id and call.status == "completed"
    streamed = check_grammar(
        raw_stream(worker, {"model": MODEL, "input": PARIS, "tools": [WEATHER], "temperature": 0})
    )
    assert [item.type for item in streamed.output] == ["function_call"]
    assert json.loads(streamed.output[0].arguments) == {"city": "Paris"}

    # The call as the SDK returned it, then its output, as a client sends them back.
    history = [
        {"role": "user", "content": PARIS},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
    ]
    second = client.responses.create(model=MODEL, input=history, tools=[WEATHER], temperature=0)
    assert second.output_text == "It is sunny and 21 C in Paris."


def test_forced_tool_choice_yields_a_schema_valid_call(client):
    schema = WEATHER["parameters"]
    for choice in ("required", {"type": "function", "name": "get_weather"}):
        r = client.responses.create(
            model=MODEL, input=HELLO, tools=[WEATHER], tool_choice=choice, temperature=1.0
        )
        calls = [item for item in r.output if item.type == "function_call"]
        assert calls and calls[0].name == "get_weather"
        jsonschema.validate(json.loads(calls[0].arguments), schema)


def test_tool_choice_none_answers_in_text(client):
    r = client.responses.create(
        model=MODEL, input=HELLO, tools=[WEATHER], tool_choice="none", temperature=0
    )
    assert [item.type for item in r.output] == ["message"]


def test_custom_tool_with_a_regex_grammar_is_called_with_matching_input(client, worker):
    tool = {
        "type": "custom",
        "name": "set_level",
        "description": "Set the level.",
        "format": {"type": "grammar", "syntax": "regex", "definition": "level-[1-3]"},
    }
    body = {
        "model": MODEL,
        "input": HELLO,
        "tools": [tool],
        "tool_choice": {"type": "custom", "name": "set_level"},
    }
    r = client.responses.create(**body)
    [call] = [item for item in r.output if item.type == "custom_tool_call"]
    assert call.name == "set_level" and call.input in ("level-1", "level-2", "level-3")
    final = check_grammar(raw_stream(worker, body))
    [call] = [item for item in final.output if item.type == "custom_tool_call"]
    assert call.input in ("level-1", "level-2", "level-3")
    # And back: a custom call and its output render as a tool turn the template accepts.
    history = [
        {"role": "user", "content": HELLO},
        {"type": "custom_tool_call", "call_id": "c1", "name": "set_level", "input": call.input},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
    ]
    again = client.responses.create(model=MODEL, input=history, tools=[tool], max_output_tokens=4)
    assert again.status in ("completed", "incomplete")


def test_namespace_flattened_and_hosted_tools_dropped(client, worker):
    tools = [
        {"type": "web_search"},
        {
            "type": "namespace",
            "name": "weather",
            "description": "Weather tools.",
            "tools": [{**WEATHER, "name": "lookup"}],
        },
    ]
    r = client.responses.create(
        model=MODEL, input=HELLO, tools=tools, tool_choice="required", max_output_tokens=32
    )
    [call] = [item for item in r.output if item.type == "function_call"]
    assert call.name == "lookup" and call.namespace == "weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert "hosted tools dropped" in worker.log()
    # Only a hosted tool: answered as if none were given.
    r = client.responses.create(
        model=MODEL, input=HELLO, tools=[{"type": "web_search"}], temperature=0
    )
    assert r.output_text == "Hello! How can I help you today?"


# -- structured output ----------------------------------------------------------------------------


def test_json_schema_format_yields_valid_json(client, worker):
    fmt = {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}
    for seed_temperature in (0.0, 1.0, 1.5):
        r = client.responses.create(
            model=MODEL, input=HELLO, text={"format": fmt}, temperature=seed_temperature
        )
        assert r.status == "completed"
        jsonschema.validate(json.loads(r.output_text), ANSWER)
    body = {"model": MODEL, "input": HELLO, "text": {"format": fmt}}
    final = check_grammar(raw_stream(worker, body))
    jsonschema.validate(json.loads(final.output_text), ANSWER)
    # json_object: any JSON object
    r = client.responses.create(
        model=MODEL, input=HELLO, text={"format": {"type": "json_object"}}, max_output_tokens=48
    )
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict)
    else:
        assert r.output_text.startswith("{")


def test_a_schema_that_cannot_be_enforced_is_a_400(client):
    schema = {"type": "object", "properties": {"q": {"type": "string", "pattern": "(?<=a)b"}}}
    fmt = {"type": "json_schema", "name": "lookbehind", "schema": schema, "strict": True}
    with pytest.raises(openai_sdk.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=HELLO, text={"format": fmt})
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == "text.format"
    assert "'lookbehind'" in error["message"] and "look-around" in error["message"]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": [{"type": "telepathy"}]}, "input", "unsupported input item type"),
        (
            {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            "input",
            "no tool call found",
        ),
        ({"input": HELLO, "previous_response_id": "resp_1"}, "previous_response_id", "not found"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input", "not served"),
        ({"input": HELLO, "background": True, "stream": True}, "stream", "not streamed"),
        ({"input": HELLO, "background": True, "store": False}, "store", "needs store"),
        ({"input": HELLO, "conversation": "conv_1"}, "conversation", "not served"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input",
            "no vision",
        ),
        (
            {
                "input": HELLO,
                "tool_choice": {"type": "function", "name": "ghost"},
                "tools": [WEATHER],
            },
            "tool_choice",
            "unknown tool",
        ),
        (
            {
                "input": HELLO,
                "tools": [{"type": "custom", "name": "x", "format": {"type": "grammar"}}],
            },
            "tools",
            "grammar needs",
        ),
        ({"input": HELLO, "temperature": 9}, None, "temperature"),
    ],
)
def test_bad_input_gets_the_responses_error_shape(worker, body, param, words):
    r = httpx.post(
        worker.base_url + "/v1/responses", json={"model": MODEL, **body}, headers=HEADERS
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


def test_other_statuses_keep_the_shape(worker, client):
    r = httpx.post(worker.base_url + "/v1/responses", json={"model": MODEL, "input": HELLO})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai_sdk.NotFoundError) as caught:
        client.responses.create(model="gpt-nonexistent", input=HELLO)
    assert caught.value.body["code"] == "model_not_found"
    r = httpx.post(
        worker.base_url + "/v1/responses",
        content=b'{"model": "x", "input": "' + b"a" * 1_100_000 + b'"}',
        headers={**HEADERS, "content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_websocket_attempt_is_refused_at_once(worker):
    started = time.perf_counter()
    r = httpx.get(
        worker.base_url + "/v1/responses",
        headers={
            **HEADERS,
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert r.status_code == 405 and "POST /v1/responses" in r.json()["error"]["message"]
    assert time.perf_counter() - started < 2
