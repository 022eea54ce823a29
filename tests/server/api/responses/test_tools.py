"""Responses tools onto function tools, tool_choice, and the model's calls back onto items."""

from __future__ import annotations

import json

import pytest

from server.api.responses.tools import custom_input, output_item, tool_choice, tool_set
from server.errors import BadRequest
from server.request import ToolCall

FN = {"type": "function", "name": "get", "parameters": {"type": "object", "properties": {}}}
CUSTOM = {"type": "custom", "name": "apply_patch", "description": "Patch files."}


def test_functions_pass_through_and_hosted_tools_are_dropped():
    tools = tool_set([FN, {"type": "web_search"}, {"type": "file_search"}])
    assert [t["function"]["name"] for t in tools.functions] == ["get"]
    assert tools.dropped == ["web_search", "file_search"]


def test_a_custom_tool_is_a_function_of_one_string():
    lark = {"type": "grammar", "syntax": "lark", "definition": "start: /x+/"}
    regex = {"type": "grammar", "syntax": "regex", "definition": "a|b"}
    tools = tool_set([{**CUSTOM, "format": lark}, {**CUSTOM, "name": "pick", "format": regex}])
    patch, pick = (t["function"] for t in tools.functions)
    assert patch["parameters"]["required"] == ["input"]
    assert "start: /x+/" in patch["description"]  # shown, not enforced
    assert pick["parameters"]["properties"]["input"]["pattern"] == "^(?:a|b)$"  # enforced


def test_namespaces_flatten_and_calls_map_back():
    tools = tool_set(
        [{"type": "namespace", "name": "mcp", "description": "d", "tools": [FN, CUSTOM]}]
    )
    assert [t["function"]["name"] for t in tools.functions] == ["mcp__get", "mcp__apply_patch"]
    fn = output_item(ToolCall("call_1", "mcp__get", {"a": 1}), tools, "fc_1")
    assert fn == {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "get",
        "arguments": json.dumps({"a": 1}),
        "status": "completed",
        "namespace": "mcp",
    }
    custom = output_item(ToolCall("call_2", "mcp__apply_patch", {"input": "P"}), tools, "ctc_1")
    assert custom["type"] == "custom_tool_call" and custom["input"] == "P"
    assert custom["name"] == "apply_patch" and custom["namespace"] == "mcp"


def test_custom_input_keeps_what_the_model_wrote():
    assert custom_input({"input": "text"}) == "text"
    assert json.loads(custom_input({"other": 1})) == {"other": 1}


def test_tool_choice_forms():
    tools = tool_set([FN, CUSTOM])
    assert tool_choice("required", tools)[0] == "required"
    assert tool_choice({"type": "function", "name": "get"}, tools)[0] == "get"
    assert tool_choice({"type": "custom", "name": "apply_patch"}, tools)[0] == "apply_patch"
    mode, narrowed = tool_choice(
        {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get"}],
        },
        tools,
    )
    assert mode == "required" and [t["function"]["name"] for t in narrowed.functions] == ["get"]
    for bad in (
        {"type": "function", "name": "nope"},
        {"type": "function", "name": "get", "namespace": 5},
        {"type": "web_search"},
        7,
    ):
        with pytest.raises(BadRequest) as caught:
            tool_choice(bad, tools)
        assert caught.value.param == "tool_choice"


def test_bad_tools_are_400s():
    for bad in (
        [{"type": "function"}],
        [{**CUSTOM, "format": {"type": "grammar"}}],
        [FN, FN],
        [{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}],
    ):
        with pytest.raises(BadRequest) as caught:
            tool_set(bad)
        assert caught.value.param == "tools"
