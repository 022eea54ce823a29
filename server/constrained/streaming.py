"""A constrained call's arguments as they are generated: the name once it is complete, then the
arguments' JSON text piece by piece (Anthropic `input_json_delta`, OpenAI argument deltas).

The grammar fixes the call's layout, so the name and where the arguments start and end can be
read off the text so far without a parser. Fed the call's body (text after its start marker).
"""

from __future__ import annotations

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


STREAMERS = {"json_tools": HermesStreamer}


def call_streamer(constraint) -> type | None:
    """What streams a constrained call's arguments in its syntax; None: calls arrive whole."""
    return STREAMERS.get(constraint.fmt) if constraint is not None else None
