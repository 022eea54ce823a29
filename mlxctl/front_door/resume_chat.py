"""The ledgers of a resumed stream's chat protocols (resume.py): what the client has of an
Anthropic Messages or OpenAI Chat Completions reply, and a replayed event cut to what it lacks.
"""

from __future__ import annotations

from typing import Any


class Ledger:
    """What the client has of the reply, per protocol: `sent` keeps count of each event it was
    given; `replayed` filters an event of a resumed attempt (None: the client has all of it)."""

    def sent(self, data: dict) -> None:
        raise NotImplementedError

    def replayed(self, data: dict) -> dict | None:
        raise NotImplementedError

    def new_attempt(self) -> None:
        """The next worker's replay starts from the reply's start."""
        raise NotImplementedError

    def resume_fields(self) -> dict:
        """What the re-sent request's body carries besides the tokens."""
        return {}


def cut(held: int, at: int, text: str) -> str:
    """The part of `text` (found at `at` of its field's text) past the client's `held` chars."""
    return text[max(0, held - at) :]


class AnthropicLedger(Ledger):
    def __init__(self) -> None:
        self.started = False  # message_start went out
        self.opened: set[int] = set()  # content blocks started, and those stopped
        self.stopped: set[int] = set()
        self.held: dict[tuple[int, str], int] = {}  # (block, delta field) -> chars the client has
        self.at: dict[tuple[int, str], int] = {}  # the same, in the replay so far

    def sent(self, data: dict) -> None:
        kind = data.get("type")
        if kind == "message_start":
            self.started = True
        elif kind == "content_block_start":
            self.opened.add(data["index"])
        elif kind == "content_block_stop":
            self.stopped.add(data["index"])
        elif kind == "content_block_delta":
            key, text = _anthropic_delta(data)
            if key is not None:
                self.held[key] = self.held.get(key, 0) + len(text)

    def new_attempt(self) -> None:
        self.at = {}

    def replayed(self, data: dict) -> dict | None:
        kind = data.get("type")
        if kind == "message_start":
            return None if self.started else data
        if kind == "content_block_start":
            return None if data["index"] in self.opened else data
        if kind == "content_block_stop":
            return None if data["index"] in self.stopped else data
        if kind != "content_block_delta":
            return data  # pings, the end, an error
        key, text = _anthropic_delta(data)
        if key is None:
            return data
        at = self.at.get(key, 0)
        self.at[key] = at + len(text)
        held = self.held.get(key, 0)
        if at + len(text) <= held:
            return None
        if at >= held:
            return data
        delta = {**data["delta"], key[1]: cut(held, at, text)}  # a delta that straddles
        return {**data, "delta": delta}


def _anthropic_delta(data: dict) -> tuple[tuple[int, str] | None, str]:
    delta = data.get("delta") or {}
    for field in ("text", "thinking", "partial_json", "signature"):
        if isinstance(delta.get(field), str):
            return (data.get("index", 0), field), delta[field]
    return None, ""


class OpenAILedger(Ledger):
    """Chat completion chunks: content, reasoning_content and each call's arguments counted;
    a replayed chunk takes the first attempt's id and created time."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.created: Any = None
        self.role = False
        self.calls: set[int] = set()  # calls whose id and name went out
        self.held: dict[tuple[str, int], int] = {}
        self.at: dict[tuple[str, int], int] = {}

    def sent(self, data: dict) -> None:
        if self.id is None and "id" in data:
            self.id, self.created = data["id"], data.get("created")
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            self.role = self.role or "role" in delta
            for key, text, call in _openai_parts(delta):
                if call is not None:
                    self.calls.add(call)
                if key is not None:
                    self.held[key] = self.held.get(key, 0) + len(text)

    def new_attempt(self) -> None:
        self.at = {}

    def replayed(self, data: dict) -> dict | None:
        if self.id is not None and "id" in data:
            data = {**data, "id": self.id, "created": self.created}
        choices = []
        for choice in data.get("choices") or []:
            delta = self._delta(choice.get("delta") or {})
            if delta or choice.get("finish_reason") is not None:
                choices.append({**choice, "delta": delta})
        if data.get("choices") and not choices and not data.get("usage"):
            return None  # the client has all this chunk said
        return {**data, "choices": choices} if data.get("choices") else data

    def _delta(self, delta: dict) -> dict:
        out: dict = {}
        for name in ("content", "reasoning_content"):
            if isinstance(delta.get(name), str):
                kept = self._beyond((name, 0), delta[name])
                if kept:
                    out[name] = kept
        if "role" in delta and not self.role:
            out["role"] = delta["role"]
            out.setdefault("content", delta.get("content") or "")
        calls = []
        for call in delta.get("tool_calls") or []:
            index = call.get("index", 0)
            kept_call = {k: v for k, v in call.items() if k not in ("id", "type", "function")}
            if "id" in call and index not in self.calls:
                kept_call.update(id=call["id"], type=call.get("type", "function"))
            function = dict(call.get("function") or {})
            if index in self.calls:
                function.pop("name", None)
            arguments = function.pop("arguments", None)
            if isinstance(arguments, str):
                kept = self._beyond(("arguments", index), arguments)
                if kept or "name" in function:
                    function["arguments"] = kept
            if function:
                kept_call["function"] = function
            if set(kept_call) - {"index"}:
                calls.append(kept_call)
        if calls:
            out["tool_calls"] = calls
        return out

    def _beyond(self, key: tuple[str, int], text: str) -> str:
        at = self.at.get(key, 0)
        self.at[key] = at + len(text)
        return cut(self.held.get(key, 0), at, text)


def _openai_parts(delta: dict):
    """(counted key, its text, a call index whose id went out) in a chunk's delta."""
    for name in ("content", "reasoning_content"):
        if isinstance(delta.get(name), str):
            yield (name, 0), delta[name], None
    for call in delta.get("tool_calls") or []:
        index = call.get("index", 0)
        arguments = (call.get("function") or {}).get("arguments")
        key = ("arguments", index) if isinstance(arguments, str) else None
        yield key, arguments or "", index if "id" in call else None
