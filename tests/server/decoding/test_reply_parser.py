"""Model output text -> text and tool calls, through mlx-lm's parsers, for each supported format."""

from __future__ import annotations

import pytest
from mlx_lm.tool_parsers import json_tools, qwen3_coder

from server.decoding.reply_parser import ReplyParser
from server.request import TextDelta, ToolCallDelta

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]

FORMATS = {"json": json_tools, "xml": qwen3_coder}


def json_call(name, args):
    import json

    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(args)}}}\n</tool_call>'


def xml_call(name, args):
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in args.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


CASES = [
    # (id, format, model output, expected [("text", str) | ("call", name, args)])
    ("json-plain-text", "json", "Just text, no calls.", [("text", "Just text, no calls.")]),
    (
        "json-one-call",
        "json",
        json_call("get_weather", {"city": "Paris"}),
        [("call", "get_weather", {"city": "Paris"})],
    ),
    (
        "json-text-then-calls",
        "json",
        "Let me check.\n"
        + json_call("get_weather", {"city": "Paris"})
        + "\n"
        + json_call("get_weather", {"city": "Oslo", "days": 2}),
        [
            ("text", "Let me check."),
            ("call", "get_weather", {"city": "Paris"}),
            ("call", "get_weather", {"city": "Oslo", "days": 2}),
        ],
    ),
    (
        "json-string-arguments",
        "json",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>',
        [("call", "get_weather", {"city": "Rome"})],
    ),
    (
        "json-malformed",
        "json",
        "<tool_call>{not json}</tool_call>",
        [("text", "<tool_call>{not json}</tool_call>")],
    ),
    (
        "json-no-name",
        "json",
        '<tool_call>{"arguments": {}}</tool_call>',
        [("text", '<tool_call>{"arguments": {}}</tool_call>')],
    ),
    (
        "json-unterminated-valid",
        "json",
        '<tool_call>\n{"name": "get_weather", "arguments": {}}',
        [("call", "get_weather", {})],
    ),
    (
        "json-unterminated-garbage",
        "json",
        'Hi <tool_call>\n{"name": "get_w',
        [("text", "Hi"), ("text", ' <tool_call>\n{"name": "get_w')],
    ),
    ("json-marker-prefix-at-end", "json", "a < b and <tool", [("text", "a < b and <tool")]),
    (
        "xml-one-call",
        "xml",
        xml_call("get_weather", {"city": "Paris", "days": 3}),
        [("call", "get_weather", {"city": "Paris", "days": 3})],
    ),
    (
        "xml-text-then-call",
        "xml",
        "Sure.\n" + xml_call("get_weather", {"city": "Lima"}),
        [("text", "Sure."), ("call", "get_weather", {"city": "Lima"})],
    ),
    (
        "xml-malformed",
        "xml",
        "<tool_call>\n<function>oops</tool_call>",
        [("text", "<tool_call>\n<function>oops</tool_call>")],
    ),
]


def run(fmt, output, step):
    module = FORMATS[fmt]
    parser = ReplyParser(
        tool_parser=module.parse_tool_call,
        call_start=module.tool_call_start,
        call_end=module.tool_call_end,
        tools=TOOLS,
    )
    events = []
    for i in range(0, len(output), step):
        events += parser.feed(output[i : i + step])
    events += parser.finish()
    merged: list = []
    for e in events:
        if isinstance(e, TextDelta):
            if merged and merged[-1][0] == "text":
                merged[-1] = ("text", merged[-1][1] + e.text)
            else:
                merged.append(("text", e.text))
        else:
            assert isinstance(e, ToolCallDelta)
            merged.append(("call", e.call.name, e.call.arguments))
    return merged


def merged_text(expected):
    out: list = []
    for item in expected:
        if item[0] == "text" and out and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + item[1])
        else:
            out.append(item)
    return out


@pytest.mark.parametrize("step", [1, 3, 10_000], ids=["char", "chunk", "whole"])
@pytest.mark.parametrize(
    ("fmt", "output", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tool_parser_table(fmt, output, expected, step):
    assert run(fmt, output, step) == merged_text(expected)


def test_stop_sequence_cuts_text_and_is_reported():
    parser = ReplyParser(stop=["END"])
    events = [e for ch in "abc EN DEND more" for e in parser.feed(ch)] + parser.finish()
    assert "".join(e.text for e in events) == "abc EN D"
    assert parser.stopped == "END"


def test_calls_get_unique_ids():
    output = json_call("get_weather", {"city": "A"}) + json_call("get_weather", {"city": "B"})
    parser = ReplyParser(
        tool_parser=json_tools.parse_tool_call,
        call_start="<tool_call>",
        call_end="</tool_call>",
        tools=TOOLS,
    )
    calls = [e.call for e in parser.feed(output) + parser.finish()]
    assert len({c.id for c in calls}) == 2
