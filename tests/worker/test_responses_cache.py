"""The prefix cache under the Responses API: a follow-up reports `cached_tokens`."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_responses import MODEL, PARIS, WEATHER, client_for


@pytest.fixture(scope="module")
def kv_worker(tmp_path_factory):
    handle = start_worker(
        tiny_model(scripted=True),
        "--cache-dir",
        str(tmp_path_factory.mktemp("kv")),
        "--max-output-tokens",
        "16",
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def test_a_follow_up_reports_cached_tokens(kv_worker):
    instructions = "You answer questions about the weather. " * 40
    with client_for(kv_worker) as client:
        first = client.responses.create(
            model=MODEL, instructions=instructions, input=PARIS, tools=[WEATHER], temperature=0
        )
        assert first.usage.input_tokens_details.cached_tokens == 0
        [call] = first.output
        follow_up = [
            {"role": "user", "content": PARIS},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ]
        second = client.responses.create(
            model=MODEL,
            instructions=instructions,
            input=follow_up,
            tools=[WEATHER],
            temperature=0,
            stream=True,
        )
        ends = ("response.completed", "response.incomplete")
        final = [e for e in second if e.type in ends][0].response
    cached = final.usage.input_tokens_details.cached_tokens
    assert first.usage.input_tokens * 0.9 <= cached < final.usage.input_tokens
