"""Normalisation of the internal request: billing header and cache markers, whatever protocol."""

from __future__ import annotations

import copy
import json

from server.api.anthropic.protocol import CountTokensRequest
from server.api.anthropic.protocol import to_chat_request as from_anthropic
from server.api.openai.protocol import ChatCompletionRequest
from server.api.openai.protocol import to_chat_request as from_openai
from server.prompt.normalize import normalize, strip_billing_header
from server.request import ChatRequest

BILLING = "x-anthropic-billing-header: cc_version=1.2.3.abc; cc_entrypoint=cli;"
EPHEMERAL = {"type": "ephemeral"}


def test_normalize_drops_billing_header_and_cache_control_without_mutating():
    request = ChatRequest(
        messages=[
            {"role": "system", "content": f"{BILLING}\nYou are helpful."},
            {"role": "user", "content": "hi", "cache_control": EPHEMERAL},
        ],
        tools=[
            {
                "type": "function",
                "function": {"name": "Read", "parameters": {}, "cache_control": EPHEMERAL},
                "cache_control": EPHEMERAL,
            }
        ],
    )
    before = copy.deepcopy(request)
    out = normalize(request)
    assert request == before
    assert out.messages == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
    ]
    assert "cache_control" not in json.dumps(out.tools)


def test_a_tool_schema_field_named_cache_control_is_kept():
    schema = {"type": "object", "properties": {"cache_control": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "Set", "parameters": schema}}
    assert normalize(ChatRequest(messages=[], tools=[tool])).tools == [tool]


def test_string_system_loses_only_the_header_line():
    assert strip_billing_header(f"{BILLING}\nBe brief.") == "Be brief."
    assert strip_billing_header("Be brief.") == "Be brief."
    plain = ChatRequest(messages=[{"role": "user", "content": f"{BILLING}"}])
    assert normalize(plain).messages == plain.messages  # only system text is cleaned


def test_both_protocols_normalize_to_the_same_prompt_messages():
    anthropic = from_anthropic(
        CountTokensRequest.model_validate(
            {
                "model": "m",
                "system": [
                    {"type": "text", "text": BILLING},
                    {"type": "text", "text": "You are helpful.", "cache_control": EPHEMERAL},
                ],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}],
                    }
                ],
            }
        )
    )
    openai = from_openai(
        ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": f"{BILLING}\nYou are helpful."},
                    {"role": "user", "content": "hi"},
                ],
            }
        )
    )
    assert (
        normalize(anthropic).messages
        == normalize(openai).messages
        == [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "hi"},
        ]
    )
