"""Reasoning under the Responses API on a thinking model (Qwen3's template, scripted)."""

from __future__ import annotations

import json

import pytest

from server.testing.thinking_templates import PARIS_REASONING
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_responses import (
    HELLO,
    MODEL,
    PARIS,
    WEATHER,
    check_grammar,
    client_for,
    raw_stream,
)


@pytest.fixture(scope="module")
def thinker():
    # Qwen3's template: the scripted model thinks, then calls the weather tool (or answers).
    handle = start_worker(
        tiny_model(scripted=True, template="qwen3"),
        "--max-output-tokens",
        "96",
        "--no-cache",
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def test_reasoning_is_an_item_before_the_call_and_goes_back_as_reasoning(thinker):
    with client_for(thinker) as client:
        r = client.responses.create(model=MODEL, input=PARIS, tools=[WEATHER], temperature=0)
        reasoning, call = r.output
        assert reasoning.type == "reasoning"
        assert reasoning.summary[0].text == PARIS_REASONING
        assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
        assert 0 < r.usage.output_tokens_details.reasoning_tokens < r.usage.output_tokens

        body = {"model": MODEL, "input": PARIS, "tools": [WEATHER], "temperature": 0}
        final = check_grammar(raw_stream(thinker, body))
        assert [item.type for item in final.output] == ["reasoning", "function_call"]
        assert final.output[0].summary[0].text == PARIS_REASONING

        # The items as the SDK returned them, then the call's output: the answer follows.
        history = [
            {"role": "user", "content": PARIS},
            reasoning.model_dump(exclude_none=True),
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ]
        answer = client.responses.create(model=MODEL, input=history, tools=[WEATHER], temperature=0)
        assert answer.output_text == "It is sunny in Paris."


def test_reasoning_effort_none_turns_thinking_off(thinker):
    with client_for(thinker) as client:
        on = client.responses.create(model=MODEL, input=HELLO, temperature=0)
        assert [item.type for item in on.output] == ["reasoning", "message"]
        off = client.responses.create(
            model=MODEL, input=HELLO, temperature=0, reasoning={"effort": "none"}
        )
        assert [item.type for item in off.output] == ["message"]
        assert off.output_text == "Hello there, no thinking."
        assert off.usage.output_tokens_details.reasoning_tokens == 0
