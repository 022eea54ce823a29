"""Why a request missed the prefix cache: where its prompt left the nearest earlier one, named in
the request's own terms (system block N, the tools list, message N and its role).

Worked out on demand from the request ring (`GET /v1/cache/why`), never per request: the ring
keeps each prompt's text and token ids, and this maps a token index back onto the text through
the segment encoder's pieces (the ids between added tokens, which join to the prompt's ids).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.api.request_ring import Recorded, RequestRing
from server.prompt.normalize import normalize, strip_billing_header

EXCERPT_CHARS = 60


@dataclass
class _Piece:
    char: int  # where the piece starts in the text
    token: int  # where its ids start in the prompt's ids
    text: str
    ids: list[int]


class TokenText:
    """Token index <-> character offset in a rendered prompt (approximate inside a piece)."""

    def __init__(self, text: str, tokens: list[int], tokenizer: Any, encoder: Any):
        self.text, self.tokenizer = text, tokenizer
        pieces = encoder.pieces(text)
        if [t for _, ids in pieces for t in ids] != tokens:
            pieces = [(text, tokens)]  # the pieces do not join to the prompt: one piece
        self.pieces: list[_Piece] = []
        char = token = 0
        for piece, ids in pieces:
            self.pieces.append(_Piece(char, token, piece, ids))
            char, token = char + len(piece), token + len(ids)
        # Where a turn marker (`<|im_start|>` and the like) starts: a turn's header begins there.
        self.markers = [p.char for p in self.pieces if len(p.ids) == 1 and _is_marker(p.text)]

    def char_of(self, token: int) -> int:
        starts = [p.token for p in self.pieces]
        piece = self.pieces[max(0, bisect_right(starts, token) - 1)]
        inside = max(0, min(token - piece.token, len(piece.ids)))
        if inside == 0:
            return piece.char
        decoded = self.tokenizer.decode(piece.ids[:inside])
        return piece.char + min(len(decoded), len(piece.text))

    def token_of(self, char: int) -> int:
        starts = [p.char for p in self.pieces]
        piece = self.pieces[max(0, bisect_right(starts, char) - 1)]
        inside = max(0, char - piece.char)
        if inside == 0:
            return piece.token
        prefix = piece.text[:inside]
        return piece.token + min(len(self.tokenizer.encode(prefix, add_special_tokens=False)),
                                 len(piece.ids))  # fmt: skip


def _is_marker(piece: str) -> bool:
    return len(piece) > 2 and piece[0] in "<[" and piece[-1] in ">]"


def _content_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    text = str(content or "").strip()
    if not text and message.get("tool_calls"):
        call = message["tool_calls"][0].get("function", {})
        text = json.dumps(call.get("name", ""))
    return text


def _find(text: str, needle: str, start: int) -> int:
    """Where `needle` (or its first line's start) occurs in `text` from `start`; -1 if not."""
    for probe in (needle[:80], needle.split("\n", 1)[0][:30]):
        if probe:
            at = text.find(probe, start)
            if at >= 0:
                return at
    return -1


def segments(recorded: Recorded, markers: list[int]) -> tuple[list[tuple[int, str]], list[str]]:
    """(char start, name) of each part of the prompt, in text order, and notes about it."""
    kept_request = recorded.request
    assert kept_request is not None, "explain passes only entries that kept their request"
    request, text = normalize(kept_request), recorded.text
    marks: list[tuple[int, str]] = [(0, "the chat template's opening")]
    notes, messages, cursor = [], request.messages, 0
    first = 0  # Anthropic numbers its messages without the system turn
    if messages and messages[0]["role"] == "system" and recorded.protocol == "anthropic":
        first = 1
        for i, block in enumerate(kept_request.system_blocks or []):
            kept = strip_billing_header(block).strip()
            if kept != block.strip():
                notes.append(f"system block {i} holds the billing header: dropped before rendering")
            at = _find(text, kept, cursor) if kept else -1
            if at >= 0:
                marks.append((at, f"system block {i}"))
                cursor = at + len(kept)
        if not kept_request.system_blocks:
            marks.append((max(0, _find(text, _content_text(messages[0]), 0)), "the system prompt"))
    tool_at = 0
    for tool in sorted(request.tools or [], key=lambda t: t["function"]["name"]):
        name = tool["function"]["name"]
        at = text.find(f'"name": {json.dumps(name)}', tool_at)
        if at >= 0:
            marks.append((at, f"the tools list (tool {name})"))
            tool_at = at + 1
    for i, message in enumerate(messages[first:]):
        needle = _content_text(message)
        at = _find(text, needle, cursor) if needle else -1
        if at < 0:
            continue
        role = "tool result" if message["role"] == "tool" else message["role"]
        # The turn's header belongs to it: start at the last turn marker after what came before.
        lower = max([cursor, *(m for m, _ in marks if m < at)])
        start = max([m for m in markers if lower < m <= at], default=at)
        marks.append((start, f"message {i} ({role})"))
        cursor = at + len(needle)
    marks.sort()
    return marks, notes


def _shared(a, b) -> int:
    x, y = np.frombuffer(a, dtype=np.uint32), np.frombuffer(b, dtype=np.uint32)
    n = min(len(x), len(y))
    differ = np.flatnonzero(x[:n] != y[:n])
    return int(differ[0]) if len(differ) else n


def _excerpt(text: str, start: int, end: int) -> str:
    return text[max(0, start) : max(0, end)]


def explain(ring: RequestRing, request_id: str | None, tokenizer: Any, encoder: Any) -> dict | None:
    """The `cache why` report for `request_id` (the newest with None); None when not in the ring."""
    entry = ring.find(request_id)
    if entry is None or entry.request is None:
        return None
    prompt, cached = len(entry.tokens), int(entry.stats.get("cached") or 0)
    nearest, shared = None, 0
    for earlier in ring.before(entry):
        if earlier.request is not None and (n := _shared(entry.tokens, earlier.tokens)) > shared:
            nearest, shared = earlier, n
    point = max(cached, shared)
    report: dict[str, Any] = {
        "request_id": entry.id, "protocol": entry.protocol, "time": round(entry.at, 3),
        "prompt_tokens": prompt, "cached_tokens": cached, "full_hit": cached >= prompt - 1,
        "nearest": {"request_id": nearest.id, "shared_tokens": shared} if nearest else None,
        "diverged_at": None, "segments": [], "notes": [],
    }  # fmt: skip
    mapping = TokenText(entry.text, list(entry.tokens), tokenizer, encoder)
    marks, report["notes"] = segments(entry, mapping.markers)
    starts = [mapping.token_of(m) for m, _ in marks] + [prompt]
    spans = [(name, a, b) for (_, name), a, b in zip(marks, starts, starts[1:], strict=False)]
    report["segments"] = [{"name": n, "tokens": [a, b]} for n, a, b in spans if b > a]
    if report["full_hit"]:
        return report
    char = mapping.char_of(point)
    index = max(0, bisect_right([m for m, _ in marks], char) - 1)
    name, first, last = spans[index]
    where = {
        "token": point, "segment": name, "segment_tokens": [first, last],
        "before": _excerpt(entry.text, char - EXCERPT_CHARS, char),
        "after": _excerpt(entry.text, char, char + EXCERPT_CHARS),
        "nearest_after": None,
    }  # fmt: skip
    if nearest is not None and shared >= cached:
        theirs = TokenText(nearest.text, list(nearest.tokens), tokenizer, encoder).char_of(point)
        where["nearest_after"] = _excerpt(nearest.text, theirs, theirs + EXCERPT_CHARS)
    if nearest is not None and shared > cached:  # shared > 0: there is a nearest
        report["notes"].append(
            f"request {nearest.id} shares {shared:,} tokens but only {cached:,} came from the "
            "cache (its entry was evicted, not stored, or cannot be trimmed that far)"
        )
    report["diverged_at"] = where
    return report
