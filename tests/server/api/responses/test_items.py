"""Responses input items onto chat-template messages (no model)."""

from __future__ import annotations

import pytest

from server.api.responses.items import messages_of
from server.errors import BadRequest


def test_a_string_input_is_one_user_turn_after_the_instructions():
    assert messages_of("Be brief.", "Hi") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_leading_developer_text_joins_the_system_turn_and_later_becomes_user_text():
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "A"}]},
        {"role": "system", "content": "B"},
        {"role": "user", "content": "Q"},
        {"role": "developer", "content": "C"},
    ]
    assert messages_of("I", items) == [
        {"role": "system", "content": "I\n\nA\n\nB"},
        {"role": "user", "content": "Q"},
        {"role": "user", "content": "C"},
    ]


def test_one_assistant_turn_gathers_reasoning_text_and_calls():
    items = [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"city": "P"}'},
        {"type": "custom_tool_call", "call_id": "c2", "name": "patch", "input": "*** Begin"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {
            "type": "custom_tool_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "ok"}],
        },
    ]
    user, assistant, out1, out2 = messages_of(None, items)
    assert user == {"role": "user", "content": "Weather?"}
    assert assistant["content"] == "Checking." and assistant["reasoning_content"] == "Look."
    assert [c["function"] for c in assistant["tool_calls"]] == [
        {"name": "get", "arguments": {"city": "P"}},
        {"name": "patch", "arguments": {"input": "*** Begin"}},
    ]
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert out1 == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert out2 == {"role": "tool", "tool_call_id": "c2", "content": "ok"}


def test_an_image_in_a_tool_output_is_named_not_refused():
    items = [
        {"role": "user", "content": "Look."},
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": [{"type": "input_text", "text": "shot: "}, {"type": "input_image"}],
        },
    ]
    output = messages_of(None, items)[-1]
    assert (
        output["content"] == "shot: [input_image omitted: this model has no vision or audio input]"
    )


def test_reasoning_content_wins_over_its_summary_and_namespaced_calls_flatten():
    items = [
        {"role": "user", "content": "Q"},
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "short"}],
            "content": [{"type": "reasoning_text", "text": "the full thought"}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "lookup",
            "namespace": "weather",
            "arguments": "{}",
        },
    ]
    assistant = messages_of(None, items)[1]
    assert assistant["reasoning_content"] == "the full thought"
    assert assistant["tool_calls"][0]["function"]["name"] == "weather__lookup"


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ([{"type": "function_call_output", "call_id": "x", "output": "o"}], "no tool call found"),
        ([{"role": "user", "content": [{"type": "input_image"}]}], "no vision"),
        ([{"role": "robot", "content": "x"}], "role must be"),
        ([{"type": "item_reference", "id": "m"}], "item references are not served"),
        (
            [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}],
            "not valid JSON",
        ),
        ([{"role": "developer", "content": "only rules"}], "no user message"),
        (["just a string"], "must be an object"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "namespace": 5}], "namespace"),
    ],
)
def test_bad_items_are_400s_naming_the_place(items, words):
    with pytest.raises(BadRequest) as caught:
        messages_of(None, items)
    assert words in caught.value.message and caught.value.param == "input"
