"""Qwen3-Coder XML tool calls end to end: a model whose template writes them, both APIs."""

from __future__ import annotations

import json

import pytest

from server.testing.scripts import WEATHER_TOOL
from tests.fixtures_worker import start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, BOTH, GREEDY, PARIS


@pytest.fixture(scope="module")
def xml_worker():
    from tests.conftest import tiny_model

    handle = start_worker(tiny_model(scripted=True, tool_format="xml"), "--max-output-tokens", "96")
    yield handle
    handle.stop()


def test_xml_tool_call_openai(xml_worker):
    from openai import OpenAI

    with OpenAI(base_url=xml_worker.base_url + "/v1", api_key="x", max_retries=0) as client:
        r = client.chat.completions.create(
            model="claude-x", messages=PARIS, tools=[WEATHER_TOOL], temperature=0
        )
        [call] = r.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == (
            "get_weather",
            {"city": "Paris"},
        )
        # The call goes back into the history through the XML template, arguments as objects.
        history = PARIS + [
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ]
        r = client.chat.completions.create(
            model="claude-x", messages=history, tools=[WEATHER_TOOL], temperature=0
        )
        assert r.choices[0].message.content == "It is sunny and 21 C in Paris."


def test_xml_tool_calls_anthropic_stream_equals_non_stream(xml_worker):
    from anthropic import Anthropic

    kwargs = dict(
        model="claude-x", max_tokens=96, messages=BOTH, tools=[ANTHROPIC_TOOL], extra_body=GREEDY
    )
    with Anthropic(base_url=xml_worker.base_url, api_key="x", max_retries=0) as client:
        whole = client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as stream:
            final = stream.get_final_message()
    assert [b.type for b in whole.content] == ["text", "tool_use", "tool_use"]
    assert [b.input for b in whole.content[1:]] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert [b.model_dump(exclude={"id"}) for b in final.content] == [
        b.model_dump(exclude={"id"}) for b in whole.content
    ]
    assert final.stop_reason == whole.stop_reason == "tool_use"
