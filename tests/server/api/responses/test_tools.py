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


# Codex's tools as it sends them in an `additional_tools` input item (code mode: a freeform
# JavaScript `exec` and its `wait`, in the model's default `functions` namespace).
EXEC = {
    "type": "custom",
    "name": "exec",
    "description": "Run JavaScript.",
    "format": {"type": "text"},
}
WAIT = {
    "type": "function",
    "name": "wait",
    "description": "Wait on a yielded exec cell.",
    "parameters": {"type": "object", "properties": {"cell_id": {"type": "string"}}},
}
MCP = {"type": "namespace", "name": "mcp", "description": "", "tools": [{**WAIT, "name": "ping"}]}
ADDITIONAL = {
    "type": "additional_tools",
    "tools": [{"type": "namespace", "name": "functions", "tools": [EXEC, WAIT]}, MCP],
}


def test_additional_tools_join_the_tools_as_if_sent_in_tools():
    sent_as_tools = tool_set([EXEC, WAIT, MCP])
    sent_as_item = tool_set(None, [ADDITIONAL, {"role": "user", "content": "hi"}])
    assert sent_as_item.functions == sent_as_tools.functions
    assert [f["function"]["name"] for f in sent_as_item.functions] == ["exec", "wait", "mcp__ping"]
    call = ToolCall(id="c1", name="exec", arguments={"input": "1 + 1"})
    item = output_item(call, sent_as_item, "ctc_1")
    assert item["type"] == "custom_tool_call" and "namespace" not in item


def test_additional_tools_follow_tools_and_a_resent_item_counts_once():
    ping = {"type": "function", "name": "ping", "parameters": {"type": "object"}}
    tools = tool_set([ping], [ADDITIONAL, {"role": "user", "content": "hi"}, ADDITIONAL])
    assert [f["function"]["name"] for f in tools.functions] == [
        "ping",
        "exec",
        "wait",
        "mcp__ping",
    ]
    with pytest.raises(BadRequest, match=r"input\[0\]: an additional_tools item needs"):
        tool_set(None, [{"type": "additional_tools"}])
    with pytest.raises(BadRequest, match=r"input\[0\]\.tools\[0\]: two tools are named 'ping'"):
        tool_set([ping], [{"type": "additional_tools", "tools": [{**ping, "description": "x"}]}])
