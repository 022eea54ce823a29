"""A stream resumed across a worker crash: the door's half (server.resume_wire is the wire).

The door asks a streamed generation for token marks, strips them, and keeps the tokens whose
events it forwarded (the mark comes first in the same write, so it knows each one, and at most
one more whose events never came). When the worker dies mid-answer the request goes to the next
worker with those tokens; that worker replays the reply's events from its start, and the ledger
of the stream's protocol forwards only what lies beyond what the client already has, with the
ids the client already knows.
"""

from __future__ import annotations

import json
from typing import Any

from mlxctl.front_door import shapes
from server.resume_wire import MARK_PREFIX, RESUMABLE_HEADER, RESUME_KEY

MAX_RESUMES = 2  # a request that kills workers must not kill every next one
# Events forwarded before any crash are counted only when one comes (most streams never see
# one), or once this many wait: the door's cost per token stays a split and an append.
FOLD_EVERY = 4096
_MARK = MARK_PREFIX.encode()
HEADER = (RESUMABLE_HEADER.encode(), b"1")


def resumable(method: str, path: str) -> bool:
    """Whether a request's stream, if it asked for one, can be resumed: an Anthropic or OpenAI
    chat POST. (The worker marks only streams: the door need not parse the body to know.)"""
    return method == "POST" and path in ("/v1/messages", "/v1/chat/completions")


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


def _cut(held: int, at: int, text: str) -> str:
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
        delta = {**data["delta"], key[1]: _cut(held, at, text)}  # a delta that straddles
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
        return _cut(self.held.get(key, 0), at, text)


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


class StreamResume:
    """One resumable stream through the door: marks stripped and kept, events counted, and each
    attempt after a crash deduplicated against what the client has."""

    def __init__(self, path: str):
        self.path = path
        anthropic = shapes.protocol_of(path) == shapes.ANTHROPIC
        self.ledger: Ledger = AnthropicLedger() if anthropic else OpenAILedger()
        self.resumes = 0
        self.ended = False  # the reply's end went out: nothing to resume
        self._base: list[int] = []  # the tokens known before this attempt
        self._tokens: list[int] = []  # those this attempt marked (a replay marks them again)
        self._marks: list[bytes] = []  # ...the latest of them still as the worker wrote them
        self._unread: list[bytes] = []  # events forwarded, not counted in the ledger yet
        self._rest = b""  # an event not complete yet

    @property
    def tokens(self) -> list[int]:
        if self._marks:
            self._tokens += [int(t) for m in self._marks for t in m.split(b",")]
            self._marks = []
        return self._tokens if len(self._tokens) >= len(self._base) else self._base

    def can_resume(self) -> bool:
        if self.ended or self.resumes >= MAX_RESUMES:
            return False
        tail = self._unread[-2:]  # whether the reply's end went out (it is the last event)
        return not any(b == b"data: [DONE]" or b.startswith(b"event: message_stop") for b in tail)

    def body(self, body: bytes) -> bytes:
        """The request re-sent to the next worker: the reply's tokens so far go with it."""
        said = json.loads(body)
        return json.dumps({**said, RESUME_KEY: self.tokens}).encode()

    def begin_attempt(self) -> None:
        """A crash: the next worker starts over, so its marks and events count from the start."""
        self._fold()
        self.resumes += 1
        self._base, self._tokens, self._rest = self.tokens, [], b""
        self.ledger.new_attempt()

    def feed(self, chunk: bytes) -> bytes:
        """The complete events of the worker's bytes so far, marks out, replays deduplicated."""
        data = self._rest + chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._rest = data
            return b""
        self._rest = data[end + 2 :]
        out = []
        for block in data[:end].split(b"\n\n"):
            if block.startswith(_MARK):
                self._marks.append(block[len(_MARK) :])
            elif not self.resumes:
                self._unread.append(block)
                out.append(block + b"\n\n")
            elif (kept := self._event(block)) is not None:
                out.append(kept)
        if len(self._unread) > FOLD_EVERY:
            self._fold()
        return b"".join(out)

    def _fold(self) -> None:
        """Count the events forwarded so far in the ledger."""
        unread, self._unread = self._unread, []
        for block in unread:
            self._event(block)

    def _event(self, block: bytes) -> bytes | None:
        """One event as the client gets it (None: it has it already)."""
        event, raw = _fields(block)
        if raw is None:
            return block + b"\n\n"  # a comment (keep-alive)
        if raw == b"[DONE]" or event == b"message_stop":
            self.ended = True
        try:
            data = json.loads(raw)
        except ValueError:
            return block + b"\n\n"
        if not isinstance(data, dict):
            return block + b"\n\n"
        if self.resumes:
            replayed = self.ledger.replayed(data)
            if replayed is None:
                return None
            if replayed is not data:
                block = _encode(event, replayed)
            data = replayed
        self.ledger.sent(data)
        return block + b"\n\n"


def _fields(block: bytes) -> tuple[bytes | None, bytes | None]:
    """An SSE event's name and data (the worker writes one `data:` line per event)."""
    event = data = None
    for line in block.split(b"\n"):
        if line.startswith(b"event: "):
            event = line[7:]
        elif line.startswith(b"data: "):
            data = line[6:]
    return event, data


def _encode(event: bytes | None, data: dict) -> bytes:
    line = b"data: " + json.dumps(data).encode()
    return (b"event: " + event + b"\n" + line) if event is not None else line
