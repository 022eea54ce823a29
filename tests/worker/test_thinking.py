"""Thinking models over real workers and the official SDKs.

Scripted tiny models think, then call a tool (or answer): one on Qwen3's template (the model
opens `<think>`, Hermes JSON calls, a plain KVCache) and one Qwen3.5-style (the prompt opens
`<think>`, Qwen3-Coder XML calls, a hybrid qwen3_next cache). Both have `enable_thinking`.
"""

from __future__ import annotations

import base64
import json
import os
import zlib

import httpx
import pytest

from server.api.thinking_signature import PREFIX
from server.testing.scripts import WEATHER_TOOL
from server.testing.thinking_templates import PARIS_REASONING
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, GREEDY, HELLO, MODEL, PARIS, sse_events
from tests.worker.test_cache import anthropic_client, openai_client
from tests.worker.test_stream import check_grammar

THINK = {"type": "enabled", "budget_tokens": 1024}


def carried(signature: str) -> str:
    """The reasoning a signature carries, read without the worker's key (the worker checks it)."""
    assert signature.startswith(PREFIX), signature
    payload = signature[len(PREFIX) :].rpartition(".")[0]
    return zlib.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).decode()


def private_home(tmp_path_factory) -> dict[str, str]:
    """A worker environment with its own MLXCTL_HOME (where its signing key is made)."""
    return {**os.environ, "MLXCTL_HOME": str(tmp_path_factory.mktemp("worker-home"))}


FAMILIES = {"qwen3": {}, "qwen35": {"family": "qwen3_next"}}


@pytest.fixture(scope="module", params=list(FAMILIES))
def thinker(request, tmp_path_factory):
    handle = start_worker(
        tiny_model(scripted=True, template=request.param, **FAMILIES[request.param]),
        *("--max-output-tokens", "96"),
        env=private_home(tmp_path_factory),
        api_key=API_KEY,
    )
    yield handle
    assert handle.stop() == 0


def ask(handle, **kwargs):
    kwargs = {"model": MODEL, "max_tokens": 96, "extra_body": GREEDY, **kwargs}
    return anthropic_client(handle).messages.create(**kwargs)


def stream_events(handle, body: dict) -> list:
    body = {"model": MODEL, "max_tokens": 96, "temperature": 0, "stream": True, **body}
    headers = {"x-api-key": API_KEY}
    with httpx.stream(
        "POST", handle.base_url + "/v1/messages", json=body, headers=headers, timeout=60
    ) as r:
        assert r.status_code == 200
        return sse_events(r)


def check_signed_blocks(events: list) -> None:
    """Every thinking block's last delta is a signature_delta carrying that block's text."""
    text: dict[int, str] = {}
    last: dict[int, dict] = {}
    kinds = {}
    for name, data in events:
        if name == "content_block_start":
            kinds[data["index"]] = data["content_block"]["type"]
        elif name == "content_block_delta":
            last[data["index"]] = data["delta"]
            if data["delta"]["type"] == "thinking_delta":
                text[data["index"]] = text.get(data["index"], "") + data["delta"]["thinking"]
    for index, kind in kinds.items():
        if kind == "thinking":
            assert last[index]["type"] == "signature_delta", last[index]
            assert carried(last[index]["signature"]) == text.get(index, "")


# -- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_thinks_then_calls_the_tool_streamed_or_not(thinker):
    whole = ask(thinker, messages=PARIS, tools=[ANTHROPIC_TOOL], thinking=THINK)
    assert [b.type for b in whole.content] == ["thinking", "tool_use"]
    thinking, call = whole.content
    assert thinking.thinking == PARIS_REASONING
    assert carried(thinking.signature) == PARIS_REASONING
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    assert whole.stop_reason == "tool_use"

    body = {"messages": PARIS, "tools": [ANTHROPIC_TOOL], "thinking": THINK}
    events = stream_events(thinker, body)
    assert check_grammar(events)["delta"]["stop_reason"] == "tool_use"
    check_signed_blocks(events)
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    # The SDK's own stream accumulator ends with the same signed blocks.
    with anthropic_client(thinker).messages.stream(
        model=MODEL,
        max_tokens=96,
        messages=PARIS,
        tools=[ANTHROPIC_TOOL],
        thinking=THINK,
        extra_body=GREEDY,
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[0].thinking == PARIS_REASONING and final.content[0].signature
    assert final.usage.output_tokens == whole.usage.output_tokens


def followup(reply) -> list[dict]:
    call = reply.content[-1]
    return [
        *PARIS,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}],
        },
    ]


def test_thinking_sent_back_renders_as_the_model_wrote_it(thinker):
    """The scripted answer comes only from the history the model was trained on: its reasoning
    rendered back into the assistant turn (from the signature when display omitted the text)."""
    first = ask(thinker, messages=PARIS, tools=[ANTHROPIC_TOOL], thinking=THINK)
    history = followup(first)
    answer = ask(thinker, messages=history, tools=[ANTHROPIC_TOOL], thinking=THINK)
    assert [b.type for b in answer.content] == ["thinking", "text"]
    assert answer.content[1].text == "It is sunny in Paris."

    omitted = {**THINK, "display": "omitted"}
    hidden = ask(thinker, messages=PARIS, tools=[ANTHROPIC_TOOL], thinking=omitted)
    assert hidden.content[0].type == "thinking" and hidden.content[0].thinking == ""
    assert carried(hidden.content[0].signature) == PARIS_REASONING
    answer = ask(thinker, messages=followup(hidden), tools=[ANTHROPIC_TOOL], thinking=omitted)
    assert answer.content[-1].text == "It is sunny in Paris."

    def count(messages) -> int:
        body = {"model": MODEL, "messages": messages, "tools": [ANTHROPIC_TOOL], "thinking": THINK}
        r = httpx.post(
            thinker.base_url + "/v1/messages/count_tokens",
            json=body,
            headers={"x-api-key": API_KEY},
        )
        assert r.status_code == 200, r.text
        return r.json()["input_tokens"]

    unsigned = followup(first)
    unsigned[1]["content"] = [b for b in unsigned[1]["content"] if b["type"] != "thinking"]
    assert count(followup(hidden)) == count(history) > count(unsigned)


def test_thinking_absent_or_disabled_uses_the_templates_off_switch(thinker):
    for thinking in (None, {"type": "disabled"}):
        extra = {"thinking": thinking} if thinking else {}
        reply = ask(thinker, messages=HELLO, **extra)
        assert [b.type for b in reply.content] == ["text"]
        assert reply.content[0].text == "Hello there, no thinking."  # trained on the off prompt
    reply = ask(thinker, messages=HELLO, thinking=THINK)
    assert [(b.type, getattr(b, "thinking", None) or b.text) for b in reply.content] == [
        ("thinking", "A greeting."),
        ("text", "Hello! How can I help you today?"),
    ]


def test_display_omitted_streams_a_signed_block_without_text(thinker):
    body = {"messages": HELLO, "thinking": {**THINK, "display": "omitted"}}
    events = stream_events(thinker, body)
    check_grammar(events)
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert "thinking_delta" not in deltas and deltas[0] == "signature_delta"
    signature = next(d["delta"]["signature"] for n, d in events if n == "content_block_delta")
    assert carried(signature) == "A greeting."


def test_display_highlights_shows_the_reasoning(thinker):
    """Claude Code 2.1.332 sends `display: "highlights"` on its side requests (they were 400s)."""
    reply = ask(thinker, messages=HELLO, thinking={**THINK, "display": "highlights"})
    assert [(b.type, getattr(b, "thinking", None) or b.text) for b in reply.content] == [
        ("thinking", "A greeting."),
        ("text", "Hello! How can I help you today?"),
    ]


def test_bad_thinking_config_is_a_clear_400(thinker):
    for thinking in (
        {"type": "enabled"},
        {"type": "sometimes"},
        {"type": "enabled", "budget_tokens": 0},
    ):
        r = httpx.post(
            thinker.base_url + "/v1/messages",
            json={"model": MODEL, "max_tokens": 8, "messages": HELLO, "thinking": thinking},
            headers={"x-api-key": API_KEY},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "thinking" in r.json()["error"]["message"]


# -- OpenAI ------------------------------------------------------------------------------------


def test_openai_reasoning_content_then_tool_calls_streamed_or_not(thinker):
    client = openai_client(thinker)
    r = client.chat.completions.create(
        model=MODEL, messages=PARIS, tools=[WEATHER_TOOL], temperature=0
    )
    message = r.choices[0].message
    assert message.model_extra["reasoning_content"] == PARIS_REASONING
    [call] = message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls"
    details = r.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < r.usage.completion_tokens

    reasoning, calls = "", []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=PARIS, tools=[WEATHER_TOOL], temperature=0, stream=True
    ):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            calls += delta.tool_calls or []
            assert not (delta.content or "").strip()
    assert reasoning == PARIS_REASONING
    assert calls[0].function.name == "get_weather"

    history = [
        *PARIS,
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": reasoning,
            "tool_calls": [call.model_dump()],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    r = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER_TOOL], temperature=0
    )
    assert r.choices[0].message.content == "It is sunny in Paris."


@pytest.mark.parametrize(
    "switch",
    [{"reasoning_effort": "none"}, {"chat_template_kwargs": {"enable_thinking": False}}],
    ids=["reasoning_effort", "chat_template_kwargs"],
)
def test_openai_reasoning_on_by_default_and_off_by_switch(thinker, switch):
    client = openai_client(thinker)
    on = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0)
    assert on.choices[0].message.model_extra["reasoning_content"] == "A greeting."
    assert on.choices[0].message.content == "Hello! How can I help you today?"
    off = client.chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, extra_body=switch
    )
    assert "reasoning_content" not in off.choices[0].message.model_extra
    assert off.choices[0].message.content == "Hello there, no thinking."
    assert off.usage.completion_tokens_details.reasoning_tokens == 0
