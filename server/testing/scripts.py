"""What the scripted tiny models answer: the prompts, the tool and the replies they learn."""

from __future__ import annotations

import json

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def call_text(name: str, arguments: dict, tool_format: str = "json") -> str:
    """A tool call as the Hermes (json) or Qwen3-Coder (xml) template writes it."""
    if tool_format == "xml":
        params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in arguments.items())
        return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


def script(tool_format: str = "json") -> list[tuple[list[dict], list[dict] | None, str]]:
    """(messages, tools, reply): what the scripted tiny model answers under greedy decoding."""
    call = lambda name, args: call_text(name, args, tool_format)  # noqa: E731
    return [
        ([{"role": "user", "content": "Say hello."}], None, "Hello! How can I help you today?"),
        ([{"role": "user", "content": "Say hello."}], [WEATHER_TOOL], "Hello there, weather fan."),
        (
            [{"role": "user", "content": "What is the weather in Paris?"}],
            [WEATHER_TOOL],
            call("get_weather", {"city": "Paris"}),
        ),
        (
            [{"role": "user", "content": "Weather in Paris and Tokyo?"}],
            [WEATHER_TOOL],
            "Checking both cities.\n"
            + call("get_weather", {"city": "Paris"})
            + "\n"
            + call("get_weather", {"city": "Tokyo"}),
        ),
        (
            [
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
            ],
            [WEATHER_TOOL],
            "It is sunny and 21 C in Paris.",
        ),
    ]


SCRIPT = script()
