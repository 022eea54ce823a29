"""The worker's side of a resumable stream (server.edge.resume_wire): token marks written in
the same write as the events the new tokens produced and before them (the front door strips
them), and the resumed tokens a re-sent request carries, and a Responses request's ids the
client has.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.edge.resume_wire import MARK_PREFIX, RESUMABLE_HEADER, RESUME_KEY, RESUME_RESPONSE_KEY
from server.errors import BadRequest
from server.request import ChatRequest

_RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9]{1,64}")  # what the response store takes
_ITEM_ID = re.compile(r"[a-z]{1,8}_[A-Za-z0-9]{1,64}")


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


@dataclass(frozen=True)
class ResponseIds:
    """The ids a resumed Responses stream's client already has: the reply keeps them, so the
    response stored under its id is the one the client saw."""

    response_id: str
    created_at: int
    items: list[str]  # output item ids by output index


def response_ids(body: Any) -> ResponseIds | None:
    """Take the client's ids off a resumed Responses request's `body` (None: not resumed)."""
    extra = getattr(body, "model_extra", None)
    said = extra.pop(RESUME_RESPONSE_KEY, None) if extra else None
    if said is None:
        return None
    ok = isinstance(said, dict) and isinstance(said.get("id"), str)
    ok = ok and _RESPONSE_ID.fullmatch(said["id"]) is not None
    ok = ok and type(said.get("created_at")) is int and isinstance(said.get("items"), list)
    if not ok or not all(isinstance(i, str) and _ITEM_ID.fullmatch(i) for i in said["items"]):
        raise BadRequest(f"`{RESUME_RESPONSE_KEY}` must be {{id, created_at, items: [item ids]}}")
    return ResponseIds(said["id"], said["created_at"], said["items"])


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
