"""Request traces on a real worker (`--trace-dir`): the official SDKs, streamed and not, the
files hold the request and what was sent back, no key appears in them, the bounds hold."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from anthropic import Anthropic
from openai import OpenAI

from tests.conftest import wait_until
from tests.fixtures_worker import start_worker

SECRET = "sk-trace-secret-0123456789"
MAX_FILES = 6
MODEL = "tiny-default"  # the served name of `tiny_model_path`


@pytest.fixture(scope="module")
def traced(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("traces")
    handle = start_worker(
        tiny_model_path,
        "--trace-dir",
        str(folder),
        "--trace-max-files",
        str(MAX_FILES),
        api_key=SECRET,
    )
    handle.traces = folder
    yield handle
    assert handle.stop() == 0


def trace_of(worker, request_id: str) -> dict:
    """The trace file of one request (written on the worker's trace thread: wait for it)."""
    found: list[Path] = []
    wait_until(lambda: bool(found.extend(worker.traces.glob(f"*-{request_id}.json")) or found))
    assert found, f"no trace for {request_id}: {sorted(p.name for p in worker.traces.iterdir())}"
    text = found[0].read_text()
    assert SECRET not in text
    return json.loads(text)


def openai_client(worker) -> OpenAI:
    return OpenAI(base_url=worker.base_url + "/v1", api_key=SECRET, max_retries=0)


def anthropic_client(worker) -> Anthropic:
    return Anthropic(base_url=worker.base_url, api_key=SECRET, max_retries=0)


ASK = [{"role": "user", "content": "Say something."}]


def test_an_openai_reply_is_traced_with_its_key_redacted(traced):
    raw = openai_client(traced).chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, max_tokens=8, seed=1
    )
    reply = raw.parse()
    trace = trace_of(traced, raw.headers["x-request-id"])
    assert trace["format"] == "mlxctl-trace/1"
    assert trace["request"]["method"] == "POST"
    assert trace["request"]["path"] == "/v1/chat/completions"
    assert trace["request"]["headers"]["authorization"] == "[redacted]"
    assert trace["request"]["body"]["messages"] == ASK
    assert trace["response"]["status"] == 200 and trace["response"]["stream"] is False
    body = trace["response"]["body"]
    assert body["choices"][0]["message"]["content"] == reply.choices[0].message.content


def test_an_openai_stream_is_traced_event_by_event(traced):
    with openai_client(traced).chat.completions.with_streaming_response.create(
        model=MODEL, messages=ASK, max_tokens=8, seed=2, stream=True
    ) as raw:
        request_id = raw.headers["x-request-id"]
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices
        )
    trace = trace_of(traced, request_id)
    assert trace["request"]["body"]["stream"] is True
    events = trace["response"]["events"]
    assert trace["response"]["stream"] is True and events[-1]["data"] == "[DONE]"
    deltas = [e["data"]["choices"][0]["delta"].get("content") or "" for e in events[:-1] if
              isinstance(e.get("data"), dict) and e["data"].get("choices")]  # fmt: skip
    assert "".join(deltas) == text
    times = [e["t"] for e in events]
    assert times == sorted(times)


def test_an_anthropic_stream_and_reply_are_traced(traced):
    client = anthropic_client(traced)
    raw = client.messages.with_raw_response.create(model=MODEL, messages=ASK, max_tokens=8)
    reply = raw.parse()
    trace = trace_of(traced, raw.headers["x-request-id"])
    headers = trace["request"]["headers"]
    credentials = [headers[n] for n in ("x-api-key", "authorization") if n in headers]
    assert credentials and set(credentials) == {"[redacted]"}
    assert trace["response"]["body"]["content"] == [
        b.model_dump(exclude_none=True) for b in reply.content
    ]
    with client.messages.with_streaming_response.create(
        model=MODEL, messages=ASK, max_tokens=8, stream=True
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        names = [event.type for event in streamed.parse()]
    events = trace_of(traced, request_id)["response"]["events"]
    sent = [e["event"] for e in events if "event" in e and e["event"] != "ping"]
    assert sent == [name for name in names if name != "ping"]
    assert sent[0] == "message_start" and sent[-1] == "message_stop"


def test_a_responses_stream_is_traced_as_codex_sends_it(traced):
    client = openai_client(traced)
    with client.responses.with_streaming_response.create(
        model=MODEL, input="Say something.", max_output_tokens=8, stream=True, store=False
    ) as raw:
        request_id = raw.headers["x-request-id"]
        types = [event.type for event in raw.parse()]
    trace = trace_of(traced, request_id)
    assert trace["request"]["path"] == "/v1/responses"
    assert trace["request"]["body"]["input"] == "Say something."
    sent = [e["data"]["type"] for e in trace["response"]["events"] if "data" in e]
    assert sent == types and sent[0] == "response.created"
    assert sent[-1] in ("response.completed", "response.incomplete")  # 8 tokens may cut it


def test_a_refused_key_is_traced_and_redacted(traced):
    reply = httpx.post(
        traced.base_url + "/v1/messages?key=" + SECRET + "-wrong",
        headers={"x-api-key": SECRET + "-wrong", "cookie": "session=" + SECRET},
        json={"model": MODEL, "max_tokens": 4, "messages": ASK},
    )
    assert reply.status_code == 401
    trace = trace_of(traced, reply.headers["x-request-id"])
    assert trace["response"]["status"] == 401
    assert trace["request"]["query"] == "key=%5Bredacted%5D"
    assert trace["request"]["headers"]["cookie"] == "[redacted]"
    assert "wrong" not in json.dumps(trace)


def test_traces_stay_within_their_count_and_turn_off_live(traced):
    auth = {"authorization": f"Bearer {SECRET}"}
    ids = []
    for _ in range(MAX_FILES + 3):
        reply = httpx.get(traced.base_url + "/v1/models", headers=auth)
        ids.append(reply.headers["x-request-id"])
    trace_of(traced, ids[-1])
    names = sorted(p.name for p in traced.traces.glob("*.json"))
    assert len(names) == MAX_FILES
    assert not any(name.endswith(f"-{ids[0]}.json") for name in names)  # the oldest went first
    off = httpx.post(traced.base_url + "/v1/trace", headers=auth, json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    quiet = httpx.get(traced.base_url + "/v1/models", headers=auth).headers["x-request-id"]
    on = httpx.post(traced.base_url + "/v1/trace", headers=auth, json={"enabled": True})
    assert on.json()["enabled"] is True and on.json()["dir"] == str(traced.traces)
    loud = httpx.get(traced.base_url + "/v1/models", headers=auth).headers["x-request-id"]
    trace_of(traced, loud)
    assert not list(traced.traces.glob(f"*-{quiet}.json"))
    status = httpx.get(traced.base_url + "/v1/trace", headers=auth).json()
    assert status["files"] == MAX_FILES and status["max_files"] == MAX_FILES


def test_a_bad_switch_is_a_400_in_the_openai_shape(traced):
    auth = {"authorization": f"Bearer {SECRET}"}
    reply = httpx.post(traced.base_url + "/v1/trace", headers=auth, json={"enabled": "yes"})
    assert reply.status_code == 400 and "enabled" in reply.json()["error"]["message"]
    assert httpx.post(traced.base_url + "/v1/trace", json={"enabled": True}).status_code == 401
