"""The worker's side of a resumable stream (server.resume_wire): token marks written in the same
write as the events the new tokens produced and before them (the front door strips them), and
the resumed tokens a re-sent request carries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from server.errors import BadRequest
from server.request import ChatRequest
from server.resume_wire import MARK_PREFIX, RESUMABLE_HEADER, RESUME_KEY


def take(chat: ChatRequest, headers: Any, body: Any) -> None:
    """Mark `chat`'s tokens where the stream asked, and take its resumed tokens off `body`."""
    streaming = getattr(body, "stream", False) is True  # the door asks it of every chat POST
    chat.token_marks = streaming and headers.get(RESUMABLE_HEADER) == "1"
    extra = getattr(body, "model_extra", None)
    resume = extra.pop(RESUME_KEY, None) if extra else None  # never seen by anything after
    if resume is None:
        return
    if not isinstance(resume, list) or not all(type(t) is int and t >= 0 for t in resume):
        raise BadRequest(f"`{RESUME_KEY}` must be a list of token ids")
    chat.resume = resume


def mark(ids: list[int]) -> str:
    return MARK_PREFIX + ",".join(map(str, ids)) + "\n\n"


async def marked(encoded: AsyncIterator[str], sampled: list[int]) -> AsyncIterator[str]:
    """The encoder's text, each piece after a mark of the tokens sampled since the last one.
    The generation thread appends a token to `sampled` before it emits the token's events, so
    a piece's mark holds every token its events came from (and maybe some sampled after)."""
    sent = 0
    async for text in encoded:
        if (now := len(sampled)) > sent:
            text = mark(sampled[sent:now]) + text
            sent = now
        yield text
