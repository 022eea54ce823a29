"""A constrained call's arguments as they are generated: the name once it is complete, then the
arguments' JSON text piece by piece (Anthropic `input_json_delta`, OpenAI argument deltas).

The grammar fixes the call's layout, so the name and where the arguments start and end can be
read off the text so far without a parser. Fed the call's body (text after its start marker).
"""

from __future__ import annotations

import functools
import json
import re

from server.request import ToolCallArgs, ToolCallBegin, new_call_id

_HERMES_HEAD = re.compile(r'\s*\{"name": ("(?:[^"\\]|\\.)*"), "arguments": ')


def json_end(text: str) -> int | None:
    """Where the JSON value at the start of `text` ends (None: not yet)."""
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class HermesStreamer:
    """`{"name": "NAME", "arguments": {...}}`: mlx-lm's `json_tools` layout."""

    def __init__(self):
        self.id = new_call_id()
        self.name: str | None = None
        self.sent = 0  # characters of the arguments sent so far
        self.done = False

    @property
    def began(self) -> bool:
        return self.name is not None

    def update(self, body: str) -> list:
        events: list = []
        if self.done:
            return events
        if self.name is None:
            head = _HERMES_HEAD.match(body)
            if head is None:
                return events
            self.name, self._start = json.loads(head.group(1)), head.end()
            events.append(ToolCallBegin(self.id, self.name))
        args = body[self._start :]
        end = json_end(args)
        if end is not None:
            args, self.done = args[:end], True
        if len(args) > self.sent:
            events.append(ToolCallArgs(args[self.sent :]))
            self.sent = len(args)
        return events


_XML_HEAD = re.compile(r"\s*<function=([^>\n]+)>\n")
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>\n")
_XML_CLOSE = "\n</parameter>"


def _held(value: str, marker: str) -> str:
    """`value` less a tail that may be the start of `marker` (not decided yet)."""
    for k in range(min(len(marker) - 1, len(value)), 0, -1):
        if value.endswith(marker[:k]):
            return value[:-k]
    return value


def _untyped(value: str):
    """What mlx-lm's `qwen3_coder` parser makes of an untyped value: JSON objects and arrays
    decoded, anything else the text itself."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, dict | list) else value


class XmlStreamer:
    """`<function=NAME>` then `<parameter=K>` values: mlx-lm's `qwen3_coder` layout, sent as
    the JSON object its parser makes of it (strings escaped as they come)."""

    def __init__(self, tools: list[dict] | None):
        self.tools = {t["function"]["name"]: t["function"] for t in tools or []}
        self.id = new_call_id()
        self.name: str | None = None
        self.sent = 0

    @property
    def began(self) -> bool:
        return self.name is not None

    def update(self, body: str) -> list:
        events: list = []
        if self.name is None:
            head = _XML_HEAD.match(body)
            if head is None:
                return events
            self.name, self._start = head.group(1).strip(), head.end()
            events.append(ToolCallBegin(self.id, self.name))
        text = self._json_prefix(body[self._start :])
        if len(text) > self.sent:
            events.append(ToolCallArgs(text[self.sent :]))
            self.sent = len(text)
        return events

    def _json_prefix(self, rest: str) -> str:
        """As much of the arguments' JSON as `rest` (after the function tag) decides."""
        from server.decoding.constrained.formats import is_raw

        props = (self.tools.get(self.name) or {}).get("parameters", {}).get("properties", {})
        out, pos = "{", 0
        while True:
            param = _XML_PARAM.match(rest, pos)
            if param is None:
                return out + "}" if rest.startswith("</function>", pos) else out
            key = param.group(1).strip()
            out += ("" if out == "{" else ", ") + json.dumps(key) + ": "
            pos = param.end()
            close = rest.find(_XML_CLOSE, pos)
            value = rest[pos:close] if close >= 0 else _held(rest[pos:], _XML_CLOSE)
            schema = props.get(key) if isinstance(props.get(key), dict) else {}
            if not is_raw(schema):
                out += value  # JSON text already
            elif "type" not in schema:
                if close < 0:
                    return out  # untyped: decided only once complete
                out += json.dumps(_untyped(value))
            else:
                out += json.dumps(value)[: None if close >= 0 else -1]  # a string so far
            if close < 0:
                return out
            pos = close + len(_XML_CLOSE) + 1  # and the newline after it


STREAMERS = {"json_tools": HermesStreamer, "qwen3_coder": XmlStreamer}


def call_streamer(constraint, tools: list[dict] | None = None):
    """What streams a constrained call's arguments in its syntax; None: calls arrive whole."""
    if constraint is None or constraint.fmt not in STREAMERS:
        return None
    if constraint.fmt == "qwen3_coder":
        return functools.partial(XmlStreamer, tools)
    return STREAMERS[constraint.fmt]
