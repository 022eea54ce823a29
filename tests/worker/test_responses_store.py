"""Stored responses on a real worker through the openai SDK: retrieve, input items, delete,
cancel, `previous_response_id` chains that hit the prefix cache and survive a restart, bounds,
and errors in the Responses shape."""

from __future__ import annotations

import json
import time

import httpx
import openai as openai_sdk
import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_responses import HEADERS, HELLO, MODEL, PARIS, WEATHER, client_for

SUNNY = "sunny, 21 C"  # the tool output the scripted model answers
INSTRUCTIONS = "You answer questions about the weather. " * 40


def stored_worker(folder, *extra: str):
    return start_worker(
        tiny_model(scripted=True),
        *("--responses-dir", str(folder), "--max-output-tokens", "64", *extra),
        api_key=API_KEY,
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tmp_path_factory.mktemp("responses"), tmp_path_factory.mktemp("kv")


@pytest.fixture(scope="module")
def kept(folders):
    handle = stored_worker(folders[0], "--cache-dir", str(folders[1]))
    yield handle
    handle.stop()


def final_of(stream) -> openai_sdk.types.responses.Response:
    ends = ("response.completed", "response.incomplete")
    return [e for e in stream if e.type in ends][0].response


def test_a_response_is_kept_listed_and_deleted(kept):
    with client_for(kept) as client:
        r = client.responses.create(model=MODEL, input=HELLO, temperature=0, metadata={"n": "1"})
        assert r.store is True
        again = client.responses.retrieve(r.id)
        assert again.model_dump() == r.model_dump()

        items = list(client.responses.input_items.list(r.id, limit=1, order="asc"))
        assert [(i.type, i.role) for i in items] == [("message", "user")]
        assert items[0].content[0].text == HELLO and items[0].id.startswith("msg_")

        with pytest.raises(openai_sdk.BadRequestError) as caught:
            client.responses.cancel(r.id)  # not a background response: OpenAI's 400
        assert caught.value.body["message"] == "Cannot cancel a synchronous response."

        client.responses.delete(r.id)
        for call in (client.responses.retrieve, client.responses.delete, client.responses.cancel):
            with pytest.raises(openai_sdk.NotFoundError) as missing:
                call(r.id)
            assert missing.value.body["type"] == "invalid_request_error"
            assert r.id in missing.value.body["message"]

        kept_not = client.responses.create(model=MODEL, input=HELLO, temperature=0, store=False)
        assert kept_not.store is False
        with pytest.raises(openai_sdk.NotFoundError):
            client.responses.retrieve(kept_not.id)


def test_a_chain_renders_the_stored_turn_and_hits_the_cache(kept):
    with client_for(kept) as client:
        first = client.responses.create(
            model=MODEL, instructions=INSTRUCTIONS, input=PARIS, tools=[WEATHER], temperature=0
        )
        [call] = first.output
        assert call.type == "function_call"
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
        second = final_of(
            client.responses.create(
                model=MODEL,
                instructions=INSTRUCTIONS,  # as on OpenAI: instructions are not carried over
                previous_response_id=first.id,
                input=[output],
                tools=[WEATHER],
                temperature=0,
                stream=True,
            )
        )
        assert second.previous_response_id == first.id
        usage = second.usage
        # The stored turn rendered to the tokens the model saw and wrote: the first prompt is
        # reused whole, and it is most of this one.
        assert usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
        assert usage.input_tokens_details.cached_tokens >= 0.9 * usage.input_tokens

        # The input items of a link are the whole conversation that led to it, newest first.
        listed = list(client.responses.input_items.list(second.id))
        assert [i.type for i in listed] == ["function_call_output", "function_call", "message"]
        assert listed[1].id == call.id and listed[0].call_id == call.call_id
        page = client.responses.input_items.list(second.id, limit=2, order="asc")
        assert [i.type for i in page.data] == ["message", "function_call"] and page.has_more

        # The same prompt, counted: the previous response's turn is in it.
        count = httpx.post(
            kept.base_url + "/v1/responses/input_tokens",
            json={
                "model": MODEL,
                "instructions": INSTRUCTIONS,
                "previous_response_id": first.id,
                "input": [output],
                "tools": [WEATHER],
            },
            headers=HEADERS,
        )
        assert count.json()["input_tokens"] == usage.input_tokens


def poll(client, response_id: str, timeout: float = 60.0):
    """The response once its background run has ended."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.responses.retrieve(response_id)
        if r.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_a_background_response_is_polled_to_its_end(kept):
    with client_for(kept) as client:
        r = client.responses.create(model=MODEL, input=HELLO, temperature=0, background=True)
        assert r.status == "queued" and r.background is True and r.output == []
        done = poll(client, r.id)
        assert done.status == "completed" and done.background is True
        assert done.output_text == "Hello! How can I help you today?"
        # Cancelling a finished background response leaves it as it is.
        assert client.responses.cancel(r.id).status == "completed"


def test_cancel_stops_a_background_generation(tmp_path):
    # Random weights never write an end token: only the cancel ends this reply early.
    handle = start_worker(tiny_model(), "--responses-dir", str(tmp_path), api_key=API_KEY)
    try:
        with client_for(handle) as client:
            r = client.responses.create(
                model=MODEL, input=HELLO, background=True, max_output_tokens=20_000
            )
            assert client.responses.retrieve(r.id).status in ("queued", "in_progress")
            cancelled = client.responses.cancel(r.id)
            assert cancelled.status == "cancelled", (cancelled.error, handle.log()[-3000:])
            assert client.responses.retrieve(r.id).status == "cancelled"
            # The generation stopped: the next request is answered at once, not after 20K tokens.
            after = client.responses.create(model=MODEL, input=HELLO, max_output_tokens=4)
            assert after.status == "incomplete"
    finally:
        assert handle.stop() == 0


def test_a_chain_survives_a_restart(folders):
    first = stored_worker(folders[0])
    try:
        with client_for(first) as client:
            r = client.responses.create(model=MODEL, input=PARIS, tools=[WEATHER], temperature=0)
    finally:
        assert first.stop() == 0
    [call] = r.output
    assert json.loads(call.arguments) == {"city": "Paris"}
    second = stored_worker(folders[0])
    try:
        with client_for(second) as client:
            assert client.responses.retrieve(r.id).output[0].call_id == call.call_id
            follow_up = client.responses.create(
                model=MODEL,
                previous_response_id=r.id,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": SUNNY}],
                tools=[WEATHER],
                temperature=0,
            )
            assert follow_up.output_text == "It is sunny and 21 C in Paris."
    finally:
        assert second.stop() == 0


def test_the_oldest_response_goes_first(tmp_path):
    handle = stored_worker(tmp_path, "--responses-max-count", "2", "--no-cache")
    try:
        with client_for(handle) as client:
            ids = [client.responses.create(model=MODEL, input=HELLO).id for _ in range(3)]
            with pytest.raises(openai_sdk.NotFoundError):
                client.responses.retrieve(ids[0])
            assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]
    finally:
        assert handle.stop() == 0
    # Written while each reply left, within it: a graceful stop waited for the last write.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.json.gz" for i in ids[1:])


def test_a_store_of_none_keeps_nothing(tmp_path):
    handle = stored_worker(tmp_path, "--responses-max-count", "0", "--no-cache")
    try:
        with client_for(handle) as client:
            r = client.responses.create(model=MODEL, input=HELLO, store=True)
            assert r.store is False
            with pytest.raises(openai_sdk.BadRequestError) as caught:
                client.responses.create(model=MODEL, input=HELLO, previous_response_id=r.id)
        assert caught.value.body["code"] == "previous_response_not_found"
        assert list(tmp_path.iterdir()) == []
    finally:
        handle.stop()


@pytest.mark.parametrize(
    ("method", "path", "status", "param"),
    [
        ("POST", "/v1/responses", 400, "previous_response_id"),
        ("GET", "/v1/responses/resp_nope", 404, None),
        ("GET", "/v1/responses/{id}?stream=true", 400, "stream"),
        ("GET", "/v1/responses/resp_nope/input_items", 404, None),
        ("GET", "/v1/responses/{id}/input_items?after=nope", 400, "after"),
        ("GET", "/v1/responses/{id}/input_items?limit=0", 400, None),
        ("GET", "/v1/responses/{id}/input_items?order=sideways", 400, None),
        ("DELETE", "/v1/responses/resp_nope", 404, None),
    ],
)
def test_errors_have_the_responses_shape(kept, method, path, status, param):
    with client_for(kept) as client:
        known = client.responses.create(model=MODEL, input=HELLO).id
    body = {"model": MODEL, "input": HELLO, "previous_response_id": "resp_gone"}
    r = httpx.request(
        method,
        kept.base_url + path.format(id=known),
        json=body if method == "POST" else None,
        headers=HEADERS,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if method == "POST":  # OpenAI's words and code, which clients match on
        assert error["code"] == "previous_response_not_found"
        assert error["message"] == "Previous response with id 'resp_gone' not found."
