"""A stream resumed across a worker crash: the door's half (server.edge.resume_wire is the wire).

The door asks a streamed generation for token marks, strips them, and keeps the tokens whose
events it forwarded (the mark comes first in the same write, so it knows each one, and at most
one more whose events never came). When the worker dies mid-answer the request goes to the next
worker with those tokens; that worker replays the reply's events from its start, and the ledger
of the stream's protocol forwards only what lies beyond what the client already has, with the
ids the client already knows.
"""

from __future__ import annotations

import json
from collections import deque

from mlxctl.front_door import shapes
from mlxctl.front_door.resume_chat import AnthropicLedger, Ledger, OpenAILedger
from mlxctl.front_door.resume_responses import ResponsesLedger
from server.edge.resume_wire import MARK_PREFIX, RESUMABLE_HEADER, RESUME_KEY

MAX_RESUMES = 2  # a request that kills workers must not kill every next one
# Events forwarded before any crash are counted only when one comes (most streams never see
# one): the door's cost per token stays a split and an append. Past this many waiting, each new
# event counts the oldest, so a long reply never pauses to count thousands at once.
FOLD_EVERY = 4096
_MARK = MARK_PREFIX.encode()
HEADER = (RESUMABLE_HEADER.encode(), b"1")
# The event a reply ends with, per protocol (OpenAI chat ends with `data: [DONE]`).
_ENDS = (b"message_stop", b"response.completed", b"response.incomplete", b"response.failed")
_LEDGERS = {shapes.ANTHROPIC: AnthropicLedger, shapes.OPENAI: OpenAILedger,
            shapes.RESPONSES: ResponsesLedger}  # fmt: skip


def resumable(method: str, path: str) -> bool:
    """Whether a request's stream, if it asked for one, can be resumed: an Anthropic, OpenAI
    chat or Responses POST. (The worker marks only streams: the door need not parse the body.)"""
    return method == "POST" and path in ("/v1/messages", "/v1/chat/completions", "/v1/responses")


class StreamResume:
    """One resumable stream through the door: marks stripped and kept, events counted, and each
    attempt after a crash deduplicated against what the client has."""

    def __init__(self, path: str):
        self.path = path
        self.ledger: Ledger = _LEDGERS[shapes.protocol_of(path)]()
        self.resumes = 0
        self.ended = False  # the reply's end went out: nothing to resume
        self._base: list[int] = []  # the tokens known before this attempt
        self._tokens: list[int] = []  # those this attempt marked (a replay marks them again)
        self._marks: list[bytes] = []  # ...the latest of them still as the worker wrote them
        self._unread: deque[bytes] = deque()  # events forwarded, not counted in the ledger yet
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
        tail = list(self._unread)[-2:]  # whether the reply's end went out (the last event)
        return not any(b == b"data: [DONE]" or _event_name(b) in _ENDS for b in tail)

    def body(self, body: bytes) -> bytes:
        """The request re-sent to the next worker: the reply's tokens so far go with it (and
        for a Responses stream, the ids its client has)."""
        said = json.loads(body)
        return json.dumps({**said, RESUME_KEY: self.tokens, **self.ledger.resume_fields()}).encode()

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
        while len(self._unread) > FOLD_EVERY:
            self._event(self._unread.popleft())
        return b"".join(out)

    def _fold(self) -> None:
        """Count the events forwarded so far in the ledger."""
        while self._unread:
            self._event(self._unread.popleft())

    def _event(self, block: bytes) -> bytes | None:
        """One event as the client gets it (None: it has it already)."""
        event, raw = _fields(block)
        if raw is None:
            return block + b"\n\n"  # a comment (keep-alive)
        if raw == b"[DONE]" or event in _ENDS:
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


def _event_name(block: bytes) -> bytes | None:
    return block[7 : block.find(b"\n")] if block.startswith(b"event: ") else None


def _encode(event: bytes | None, data: dict) -> bytes:
    line = b"data: " + json.dumps(data).encode()
    return (b"event: " + event + b"\n" + line) if event is not None else line
