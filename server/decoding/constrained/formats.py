"""Lark grammars (llguidance dialect) for one tool call in a model's own syntax.

A body is everything after the call's start marker, up to and including its end marker, so the
same rules serve a forced reply (start marker included) and a call the model opened itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable

# The tool parsers (mlx-lm `tool_parsers` modules) whose syntax we can write a grammar for.
SUPPORTED = ("json_tools", "qwen3_coder")
# Spacing as chat templates write JSON (`tojson`): the constraint then matches the prompt's calls.
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def json_schema(schema: dict, lenient: bool = False) -> str:
    """`%json {...}` for `schema`, with the template's spacing (and lenient: skip unknown keys)."""
    style = {**_JSON_STYLE, "lenient": lenient}
    return "%json " + json.dumps({**schema, "x-guidance": style})


def _literal(text: str) -> str:
    return json.dumps(text)


def hermes_body(name: str, schema: dict, end: str, lenient: bool) -> str:
    """`\\n{"name": "NAME", "arguments": {...}}\\n` then the end marker (mlx-lm `json_tools`)."""
    head = _literal(f'\n{{"name": {json.dumps(name)}, "arguments": ')
    return f'{head} {json_schema(schema, lenient)} "}}\\n" {end}'


_STRING_TYPES = {"string", "str", "text", "varchar", "char", "enum"}
# A raw XML value: up to "\n</parameter>", never containing "</parameter>" (the parser cuts
# there) and never "null" (the parser turns that into None).
_RAW = r"/(?s:.*)/ & ~/(?s:.*)<\/parameter>(?s:.*)/ & ~/(?i:null)/"


def is_raw(schema: dict) -> bool:
    """Whether the XML form writes this parameter's value as raw text (strings, untyped);
    otherwise it is JSON text."""
    kind = schema.get("type")
    return kind is None or (isinstance(kind, str) and kind.strip().lower() in _STRING_TYPES)


def _xml_value(rule: str, schema: dict, lenient: bool) -> list[str]:
    """Rules for one parameter's value as mlx-lm's `qwen3_coder` parser reads it back."""
    if "$ref" in schema and not lenient:
        raise ValueError("$ref in a parameter (XML calls)")
    stop = '[suffix="\\n</parameter>"]'
    if is_raw(schema):
        if "enum" in schema:
            options = " | ".join(_literal(str(v)) for v in schema["enum"])
            return [f'{rule}: ({options}) "\\n</parameter>"']
        if "const" in schema:
            return [f'{rule}: {_literal(str(schema["const"]))} "\\n</parameter>"']
        if any(k in schema for k in ("pattern", "format", "minLength", "maxLength")):
            # Constrained strings: the JSON string grammar's inside, as its own lexeme.
            inner = {k: v for k, v in schema.items() if k != "description"}
            return [f"{rule}{stop}: {_string_regex(inner, lenient)}"]
        return [f"{rule}{stop}: {_RAW}"]  # untyped: raw text, or JSON the parser decodes
    return [f'{rule}: {json_schema(schema, lenient)} "\\n</parameter>"']


def _string_regex(schema: dict, lenient: bool) -> str:
    """A raw-string lexeme for a string schema with constraints (length, pattern)."""
    parts = [_RAW]
    pattern = schema.get("pattern")
    if pattern:
        anchored = pattern.startswith("^") and pattern.endswith("$")
        body = pattern[1:-1] if anchored else f"(?s:.*)(?:{pattern})(?s:.*)"
        parts.append("/" + body.replace("/", "\\/") + "/")
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if low or high is not None:
        parts.append(f"/(?s:.{{{int(low)},{'' if high is None else int(high)}}})/")
    if "format" in schema and not lenient:
        raise ValueError(f"string format {schema['format']!r} in a raw XML parameter")
    return " & ".join(parts)


# Object keywords the XML form enforces (or that do not constrain), at a schema's top.
_XML_TOP_KEYS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "description",
    "title",
    "$schema",
    "default",
    "examples",
}


def xml_body(name: str, schema: dict, end: str, lenient: bool, prefix: str) -> list[str]:
    """`\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n...</function>\\n` then end
    (mlx-lm `qwen3_coder`): parameters in schema order, required ones always there."""
    unknown = sorted(set(schema) - _XML_TOP_KEYS)
    if unknown and not lenient:
        raise ValueError(f"unsupported keywords {unknown} (XML calls)")
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    rules, seq = [], []
    for i, (key, sub) in enumerate(props.items()):
        value = f"{prefix}_v{i}"
        rules += _xml_value(value, sub if isinstance(sub, dict) else {}, lenient)
        item = f"({_literal(f'<parameter={key}>' + chr(10))} {value} {_literal(chr(10))})"
        seq.append(item if key in required else item + "?")
    head = _literal(f"\n<function={name}>\n")
    rules.insert(0, f'{prefix}: {head} {" ".join(seq)} "</function>\\n" {end}')
    return rules


def body_rules(fmt: str, tools: list[dict], end: str, lenient: bool) -> tuple[list[str], str]:
    """Rules for a call to any of `tools` in `fmt`, and the name of the rule that matches one."""
    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        schema = fn.get("parameters") or {}
        if "type" not in schema:  # arguments are an object whatever the schema leaves open
            schema = {"type": "object", **schema}
        rule = f"call_{i}"
        if fmt == "json_tools":
            rules.append(f"{rule}: {hermes_body(fn['name'], schema, end, lenient)}")
        else:
            rules += xml_body(fn["name"], schema, end, lenient, rule)
        alternatives.append(rule)
    rules.append("body: " + " | ".join(alternatives))
    return rules, "body"


def reply_grammar(
    fmt: str,
    tools: list[dict],
    marker: Callable[[str], str],
    start: str,
    end: str,
    *,
    forced: bool,
    parallel: bool,
    lenient: bool = False,
) -> str:
    """The whole grammar: forced, one call (or several, newline-separated) from the first token;
    otherwise one call's body, for a call the model opened itself."""
    rules, body = body_rules(fmt, tools, marker(end), lenient)
    if not forced:
        top = f"start: {body}"
    elif parallel:
        top = f'start: {marker(start)} {body} ("\\n" {marker(start)} {body})*'
    else:
        top = f"start: {marker(start)} {body}"
    return "\n".join([top, *rules]) + "\n"
