"""Chat templates of thinking families for the tiny test models, and a script that thinks.

`qwen3` renders as Qwen3's template does: the model opens `<think>` itself, `enable_thinking`
false puts an empty think block in the generation prompt, and reasoning is kept only for the
assistant turns after the last user query (a tool loop keeps it, a new question drops it).
`qwen3_thinking` is the always-thinking variant (Qwen3-2507 Thinking, Qwen3-Next Thinking): its
generation prompt opens `<think>` and there is no switch. Both call tools as Hermes JSON, so
mlx-lm picks its `json_tools` parser and infers the think markers from the vocabulary.
`qwen35` is Qwen3.5-style: the generation prompt opens `<think>` (`enable_thinking` false closes
it empty) and calls are Qwen3-Coder XML (`<function=...>`), so mlx-lm picks `qwen3_coder`.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.testing.scripts import WEATHER_TOOL, call_text

THINK_TOKENS = ("<think>", "</think>")

_TOOLS_SYSTEM = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, \
"arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
"""

# The last real user query (not a tool response wrapped as one): reasoning after it is kept.
_LAST_QUERY = """\
{%- set ns = namespace(last_query=messages|length - 1, searching=true) %}
{%- for message in messages[::-1] %}
{%- if ns.searching and message.role == 'user' and message.content is string and not \
(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
{%- set ns.searching = false %}{%- set ns.last_query = messages|length - 1 - loop.index0 %}
{%- endif %}
{%- endfor %}
"""

_TURNS = """\
{%- for message in messages %}
{%- set content = message.content if message.content is string else '' %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{%- set reasoning = '' %}
{%- if message.reasoning_content is string %}{%- set reasoning = message.reasoning_content %}
{%- elif '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}
{%- endif %}
{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' \
+ content.lstrip('\\n') }}
{%- else %}
{{- '<|im_start|>assistant\\n' + content }}
{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- if (loop.first and content) or not loop.first %}{{- '\\n' }}{%- endif %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
CALL
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\
{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\
{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
"""

_JSON_CALL = """\
{{- '<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}\
{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}"""

_XML_CALL = """\
{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}
{%- for key, value in tool_call.arguments.items() %}{{- '<parameter=' + key + '>\\n' }}
{%- if value is string %}{{- value }}{%- else %}{{- value | tojson }}{%- endif %}
{{- '\\n</parameter>\\n' }}{%- endfor %}{{- '</function>\\n</tool_call>' }}"""

_SWITCH_OFF = """\
{%- if enable_thinking is defined and enable_thinking is false %}\
{{- '<think>\\n\\n</think>\\n\\n' }}"""

QWEN3 = (
    _TOOLS_SYSTEM
    + _LAST_QUERY
    + _TURNS.replace("CALL", _JSON_CALL)
    + """\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}\
{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
"""
)

QWEN3_THINKING = (
    _TOOLS_SYSTEM
    + _LAST_QUERY
    + _TURNS.replace("CALL", _JSON_CALL)
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}\n"
)

QWEN35 = (
    _TOOLS_SYSTEM
    + _LAST_QUERY
    + _TURNS.replace("CALL", _XML_CALL)
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}\n"
    + _SWITCH_OFF
    + "{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}\n"
)


@dataclass(frozen=True)
class Template:
    text: str
    tool_format: str  # "json" (Hermes) or "xml" (Qwen3-Coder)
    opens_think: bool  # the generation prompt opens `<think>`: replies start inside it
    switch: bool  # has `enable_thinking`
    tokens: tuple[str, ...] = THINK_TOKENS  # the tokenizer needs them beside the Hermes ones


TEMPLATES = {
    "qwen3": Template(QWEN3, "json", opens_think=False, switch=True),
    "qwen3_thinking": Template(QWEN3_THINKING, "json", opens_think=True, switch=False),
    "qwen35": Template(QWEN35, "xml", opens_think=True, switch=True),
}

PARIS_REASONING = "The user wants the weather in Paris. I will call the weather tool."
SUNNY_REASONING = "The tool answered: sunny, 21 C."


def thinking_script(template: str = "qwen3") -> list[tuple]:
    """(messages, tools, reply[, template options]) a scripted model on `template` answers.
    Where the generation prompt opens `<think>` the reply starts inside it."""
    spec = TEMPLATES[template]
    think = (lambda r: r.removeprefix("<think>\n")) if spec.opens_think else (lambda r: r)

    paris = [{"role": "user", "content": "What is the weather in Paris?"}]
    hello = [{"role": "user", "content": "Say hello."}]
    call = call_text("get_weather", {"city": "Paris"}, spec.tool_format)
    answered = [
        *paris,
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": PARIS_REASONING,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    off = [(hello, None, "Hello there, no thinking.", {"enable_thinking": False})]
    return [
        (paris, [WEATHER_TOOL], think(f"<think>\n{PARIS_REASONING}\n</think>\n\n{call}")),
        (
            answered,
            [WEATHER_TOOL],
            think(f"<think>\n{SUNNY_REASONING}\n</think>\n\nIt is sunny in Paris."),
        ),
        (hello, None, think("<think>\nA greeting.\n</think>\n\nHello! How can I help you today?")),
    ] + (off if spec.switch else [])
