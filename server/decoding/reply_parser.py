"""Turn the model's streamed text into text deltas and structured tool calls, and spot stop strings.

Runs on the generation thread, fed one detokenized segment at a time. Text that might be the
start of a marker is held back until it is decided; a call that does not parse is returned as
the text the model wrote, never an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from server.request import TextDelta, ToolCall, ToolCallDelta, new_call_id

log = logging.getLogger(__name__)


def _partial_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of one of `markers`."""
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:size]):
                best = size
                break
    return best


def parse_calls(
    parser: Callable[..., Any], text: str, tools: list[dict] | None
) -> list[ToolCall] | None:
    """Parse one call block with an mlx-lm tool parser; None when it is not a valid call."""
    try:
        parsed = parser(text, tools)
    except Exception as exc:  # parsers raise anything from ValueError to KeyError
        log.debug("tool call did not parse: %s", exc)
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = item.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                return None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(id=new_call_id(), name=item["name"], arguments=args))
    return calls or None


class ReplyParser:
    """Feed text segments; get TextDelta / ToolCallDelta events back. `stopped` names a hit stop."""

    def __init__(
        self,
        *,
        tool_parser: Callable[..., Any] | None = None,
        call_start: str | None = None,
        call_end: str | None = None,
        tools: list[dict] | None = None,
        stop: list[str] | None = None,
        primed: str = "",
        call_streamer: Callable[[], Any] | None = None,
    ):
        self.parse_tools = bool(tool_parser and call_start)
        self.tool_parser = tool_parser
        self.start = call_start or ""
        self.end = call_end or ""
        self.tools = tools
        self.stop = [s for s in (stop or []) if s]
        self.stopped: str | None = None
        self.calls = 0
        self._buf = ""
        self._in_call = False
        self._space = ""  # whitespace held back: dropped if a call follows it
        self._call_space = ""  # ...and given back if that call turns out malformed
        # Constrained calls stream their arguments as generated (constrained.streaming).
        self._new_streamer, self._streamer = call_streamer, None
        if primed:
            # A forced opening (tool_choice) was put in the prompt: parse as if the model wrote it.
            self.feed(primed, emit=False)

    def feed(self, text: str, emit: bool = True) -> list:
        if self.stopped:
            return []
        self._buf += text
        events: list = []
        while True:
            if self._in_call:
                if not self.end or self.end not in self._buf:
                    events += self._streamer.update(self._buf) if self._streamer else []
                    break
                body, _, self._buf = self._buf.partition(self.end)
                events += self._close_call(body, self.end)
                continue
            markers = self.stop + ([self.start] if self.parse_tools else [])
            hits = [(self._buf.find(m), m) for m in markers]
            hits = [(i, m) for i, m in hits if i >= 0]
            if not hits:
                keep = _partial_suffix(self._buf, markers)
                ready, self._buf = (
                    self._buf[: len(self._buf) - keep],
                    self._buf[len(self._buf) - keep :],
                )
                events += self._text(ready)
                break
            index, marker = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
            events += self._text(self._buf[:index])
            self._buf = self._buf[index + len(marker) :]
            if marker in self.stop:
                self.stopped = marker
                self._buf = ""
                break
            self._call_space, self._space = self._space, ""
            self._in_call = True
            self._streamer = self._new_streamer() if self._new_streamer else None
        return events if emit else []

    def finish(self) -> list:
        """Flush what is held back at the end of generation."""
        events: list = []
        if self._in_call:
            # No end marker (ran out of tokens, or the format has none): parse what there is.
            events += self._close_call(self._buf, "")
        elif self._buf and not self.stopped:
            events += self._text(self._buf)
        self._buf = ""
        if self._space and not self.calls:
            events.append(TextDelta(self._space))
        self._space = ""
        return events

    def _text(self, text: str) -> list:
        if not text:
            return []
        if not self.parse_tools:  # whitespace is only held back to drop it before a call
            return [TextDelta(text)]
        text = self._space + text
        stripped = text.rstrip()
        self._space = text[len(stripped) :]
        return [TextDelta(stripped)] if stripped else []

    def _close_call(self, body: str, end: str) -> list:
        self._in_call = False
        assert self.tool_parser is not None, "a call opens only when parse_tools, which needs one"
        calls = parse_calls(self.tool_parser, body, self.tools)
        streamer, self._streamer = self._streamer, None
        if streamer is not None and streamer.began:  # already open on the client: close it
            events = streamer.update(body)
            call = calls[0] if calls else ToolCall(streamer.id, streamer.name, {})
            call.id = streamer.id
            self.calls += 1
            return [*events, ToolCallDelta(call)]
        if calls is None:
            return self._text(self._call_space + self.start + body + end)
        self.calls += len(calls)
        return [ToolCallDelta(call) for call in calls]
