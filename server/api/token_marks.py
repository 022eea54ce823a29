"""The front door's side of a stream: token marks written ahead of the events they produce, and
the resumed tokens a re-sent request carries (mlxctl.front_door.resume reads and writes them).

A stream asked with RESUMABLE_HEADER gets, in the same write as the events new tokens produced
and before them, an SSE comment with their ids; the door strips it. A request re-sent after its
worker died carries the tokens so far under RESUME_KEY in its JSON body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from server.errors import BadRequest
from server.request import ChatRequest, TokenMark

RESUMABLE_HEADER = "x-mlxctl-resumable"
RESUME_KEY = "mlxctl_resume"
MARK_PREFIX = ": mlxctl-tokens "


def take(chat: ChatRequest, headers: Any, body: Any) -> None:
    """Mark `chat`'s tokens where the stream asked, and take its resumed tokens off `body`."""
    chat.token_marks = headers.get(RESUMABLE_HEADER) == "1"
    extra = getattr(body, "model_extra", None)
    resume = extra.pop(RESUME_KEY, None) if extra else None  # never seen by anything after
    if resume is None:
        return
    if not isinstance(resume, list) or not all(type(t) is int and t >= 0 for t in resume):
        raise BadRequest(f"`{RESUME_KEY}` must be a list of token ids")
    chat.resume = resume


def mark(ids: list[int]) -> str:
    return MARK_PREFIX + ",".join(map(str, ids)) + "\n\n"


class Marks:
    """Between a job's events and its encoder: token marks leave the events and go out in front
    of the encoder's next text."""

    def __init__(self) -> None:
        self.pending: list[int] = []

    async def events(self, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for event in events:
            if isinstance(event, TokenMark):
                self.pending.extend(event.ids)
            else:
                yield event

    async def text(self, encoded: AsyncIterator[str]) -> AsyncIterator[str]:
        async for text in encoded:
            if self.pending:
                text = mark(self.pending) + text
                self.pending = []
            yield text
