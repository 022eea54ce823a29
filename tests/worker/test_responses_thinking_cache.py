"""Reasoning round trips under the Responses API on a thinking template (every reply opens
`<think>`), with the prefix cache on: a stateless client (Codex: `store: false`,
`include: ["reasoning.encrypted_content"]`) that sends a reasoning item back with only its
`encrypted_content` gets the reasoning rendered as the model wrote it, so the whole previous
prompt is reused; a `previous_response_id` chain reuses it as a new question after a reply does.
"""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import long_text
from tests.worker.test_responses import (
    HEADERS,
    MODEL,
    WEATHER,
    check_grammar,
    client_for,
    raw_stream,
)
from tests.worker.test_thinking import private_home
from tests.worker.test_thinking_cache import TEMPLATE, opening_tokens

ENCRYPTED = ["reasoning.encrypted_content"]
QUESTION = {"role": "user", "content": "List the files, then read them."}


@pytest.fixture(scope="module")
def model():
    return tiny_model(template=TEMPLATE)


@pytest.fixture(scope="module")
def thinker(model, tmp_path_factory):
    handle = start_worker(
        model, "--max-output-tokens", "40", env=private_home(tmp_path_factory), api_key=API_KEY
    )
    yield handle
    assert handle.stop() == 0


def ask(client, system: str, items: list, **extra):
    return client.responses.create(
        model=MODEL,
        instructions=system,
        input=items,
        tools=[WEATHER],
        max_output_tokens=12,
        temperature=0,
        **extra,
    )


def test_encrypted_reasoning_sent_back_renders_exactly(thinker):
    import httpx

    system = long_text(500, seed=41)
    with client_for(thinker) as client:
        first = ask(client, system, [QUESTION], store=False, include=ENCRYPTED)
        assert first.output[0].type == "reasoning"
        blob = first.output[0].encrypted_content
        assert blob and first.output[0].summary[0].text not in blob  # compressed, signed
        # What Codex sends back: the reasoning with its summary dropped, then the turn's call.
        reasoning = {
            "type": "reasoning",
            "id": first.output[0].id,
            "summary": [],
            "encrypted_content": blob,
        }
        said = [item.model_dump(exclude_none=True) for item in first.output[1:]]
        call = {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "1"}',
        }
        result = {"type": "function_call_output", "call_id": "call_1", "output": "file 1 read"}
        history = [QUESTION, reasoning, *said, call, result]
        second = ask(client, system, history, store=False, include=ENCRYPTED)
    cached, prompt = second.usage.input_tokens_details.cached_tokens, second.usage.input_tokens
    # The whole first prompt (but its last token, re-rendered) is a prefix of this one.
    assert cached >= first.usage.input_tokens - 1, (cached, first.usage.input_tokens)
    assert cached >= 0.9 * prompt, (cached, prompt)

    # An altered blob is skipped (the item's own text, none here, is used) and logged.
    def count(item: dict) -> int:
        body = {
            "model": MODEL,
            "instructions": system,
            "input": [QUESTION, item, *said, call, result],
            "tools": [WEATHER],
        }
        r = httpx.post(thinker.base_url + "/v1/responses/input_tokens", json=body, headers=HEADERS)
        return r.json()["input_tokens"]

    assert count(reasoning) == prompt
    tampered = {**reasoning, "encrypted_content": blob[:-2] + ("AA" if blob[-2:] != "AA" else "BB")}
    assert count(tampered) < prompt
    assert "encrypted_content is not this worker's" in thinker.log()


def test_a_stored_chain_on_a_thinking_model_reuses_the_prompt(thinker, model):
    system = long_text(500, seed=43)
    with client_for(thinker) as client:
        first = ask(client, system, [QUESTION])
        assert first.store is True and first.output[0].type == "reasoning", first.output
        second = ask(
            client,
            system,
            [{"role": "user", "content": "And the next?"}],
            previous_response_id=first.id,
        )
    cached, prompt = second.usage.input_tokens_details.cached_tokens, second.usage.input_tokens
    # The template drops an answered turn's reasoning: the first prompt is reused up to where
    # its reply's turn began.
    assert cached >= first.usage.input_tokens - opening_tokens(model), (cached, first.usage)
    assert cached >= 0.9 * prompt, (cached, prompt)


def test_a_streamed_reasoning_item_carries_its_blob_when_asked(thinker):
    from server.api.thinking_signature import reasoning_of

    body = {
        "model": MODEL,
        "instructions": long_text(50, seed=41),
        "input": [QUESTION],
        "max_output_tokens": 12,
        "temperature": 0,
        "include": ENCRYPTED,
    }
    final = check_grammar(raw_stream(thinker, body))
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.encrypted_content.startswith("mlxctl1.")
    plain = check_grammar(raw_stream(thinker, {**body, "include": []}))
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
    # Signed with the key in the worker's home: this test's home has another, which refuses it.
    assert reasoning_of(reasoning.encrypted_content) is None
