"""Closing a constrained call before max_tokens runs out, so a cut-short call still validates.

In the last tokens of its budget an open call is steered to the text that ends it soonest (end
the string, close the objects, then the end marker): its strings may be cut short, its syntax
and schema hold, and the reply still ends as `max_tokens` so the client knows. What can come
next is always the grammar's to say; this only picks among it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

# In a call's last HORIZON tokens of budget (more where closing costs more) it grows no new
# items where it can close instead, and closing is planned by a dry run; it starts with SLACK
# tokens in hand (XML: an optional parameter may still open, ~8 tokens). In the last NEAR tokens
# before closing must start, a JSON call writes string text that leaves the cost unchanged, or
# one of the model's CANDIDATES likeliest tokens that a dry run shows still closes in time.
HORIZON = 64
SLACK = {"json_tools": 2, "qwen3_coder": 10}
NEAR = 16
CANDIDATES = 4


@functools.lru_cache(maxsize=4)
def token_ids(llt: Any) -> dict[bytes, int]:
    """Each token's bytes to its id (the first id where several share bytes)."""
    out: dict[bytes, int] = {}
    for i in range(llt.vocab_size):
        out.setdefault(llt.decode_bytes([i]), i)
    return out


def _json_close(text: bytes) -> bytes:
    """The shortest text that closes every JSON string, object and array open in `text`."""
    stack, in_string, escaped = [], False, False
    for byte in text:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    return (('"' if in_string else "") + "".join(reversed(stack))).encode()


def _partial(text: bytes, target: bytes) -> bytes:
    """`target` less the start of it that `text` already ends with."""
    for k in range(min(len(target) - 1, len(text)), 0, -1):
        if text.endswith(target[:k]):
            return target[k:]
    return target


def target(fmt: str, call: bytes, end: bytes) -> bytes | None:
    """The text that brings the open `call` (its bytes after the start marker) to its end."""
    if end in call:
        return None  # closed: what follows (another call, end of turn) is the grammar's
    if fmt == "qwen3_coder":
        head, _, value = call.rpartition(b"<parameter=")
        tail = b"</function>\n" + end
        if head and b">\n" in value and b"\n</parameter>" not in value:
            value = value.split(b">\n", 1)[1]
            inner = _json_close(value) if value[:1] and value[:1] in b'{["' else b""
            return inner + _partial(value, b"\n</parameter>\n") + tail
        return _partial(call, tail)
    return _json_close(call) + _partial(call, b"\n" + end)


@functools.lru_cache(maxsize=4)
def by_length(llt: Any) -> np.ndarray:
    """Token ids, shortest text first (the fallback when nothing closes: the least detour)."""
    ids = token_ids(llt)
    return np.array(sorted(ids.values(), key=lambda i: (len(llt.decode_bytes([i])), i)))


def next_token(
    llt: Any, fmt: str, call: bytes, end: bytes, words: np.ndarray, matcher: Any
) -> int | None:
    """Of the tokens `words` allows, the one that brings `call` soonest to its end: the closing
    text, else what the grammar forces (a key's name), else the shortest token."""
    from server.decoding.constrained.masks import allowed_among

    want = target(fmt, call, end)
    if want is None:  # the call is complete: end the turn
        found = np.array(llt.eos_tokens, dtype=np.int64)
    else:
        ids = token_ids(llt)
        found = np.array([ids[want[:k]] for k in range(len(want), 0, -1) if want[:k] in ids])
        found = allowed_among(words, found.astype(np.int64)) if found.size else found
        if not found.size:
            forced = matcher.compute_ff_tokens()
            found = np.array(forced[:1], dtype=np.int64) if forced else by_length(llt)
    allowed = allowed_among(words, found)
    return int(allowed[0]) if allowed.size else None


@functools.lru_cache(maxsize=8)
def _openers(llt: Any, at_least: int) -> np.ndarray:
    """A mask of the tokens that open `at_least` JSON objects, arrays or items (`{[,`)."""
    bits = np.zeros(((llt.vocab_size + 31) // 32) * 32, dtype=np.uint8)
    for data, i in token_ids(llt).items():
        if data.count(b"{") + data.count(b"[") + data.count(b",") >= at_least:
            bits[i] = 1
    return np.packbits(bits, bitorder="little").view(np.int32).reshape(1, -1)


def _xml_json_value(call: bytes) -> bytes | None:
    """The open XML parameter's value when it is (or may start) JSON; None otherwise."""
    head, _, value = call.rpartition(b"<parameter=")
    if not head or b">\n" not in value or b"\n</parameter>" in value:
        return None
    value = value.split(b">\n", 1)[1]
    return value if not value or value[:1] in b"{[" else None


def no_new_structure(llt: Any, fmt: str, call: bytes, words: np.ndarray) -> np.ndarray:
    """`words` less the tokens that open objects, arrays or items where that is a choice
    (outside strings; the fewest the grammar allows): near the end, growth only costs."""
    text = call if fmt == "json_tools" else _xml_json_value(call)
    if text is None:
        return words
    if _json_close(text).startswith(b'"'):  # in a string: no `",` (ends it, opens an item)
        fewer = words & ~_openers_after_quote(llt)
        return fewer if fewer.any() else words
    for at_least in (1, 2):
        fewer = words & ~_openers(llt, at_least)
        if fewer.any():
            return fewer
    return words


@functools.lru_cache(maxsize=4)
def _openers_after_quote(llt: Any) -> np.ndarray:
    """A mask of the tokens with `{`, `[` or `,` after a `"` (from inside a JSON string)."""
    bits = np.zeros(((llt.vocab_size + 31) // 32) * 32, dtype=np.uint8)
    for data, i in token_ids(llt).items():
        _, quote, after = data.partition(b'"')
        if quote and any(c in after for c in b"{[,"):
            bits[i] = 1
    return np.packbits(bits, bitorder="little").view(np.int32).reshape(1, -1)


def steps_to_close(
    matcher: Any, llt: Any, fmt: str, call: bytes, end: bytes, limit: int = HORIZON
) -> int:
    """How many tokens closing from here takes (a dry run on a copy of the matcher), the end
    of turn included; `limit` when it takes that many or more."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    matcher, call = matcher.deep_copy(), bytes(call)
    words = allocate_token_bitmask(1, llt.vocab_size)
    for n in range(limit):
        if target(fmt, call, end) is None:
            return n + 1  # and the end of turn
        fill_next_token_bitmask(matcher, words)
        token = next_token(llt, fmt, call, end, words, matcher)
        if token is None or not matcher.consume_token(token):
            return limit
        call += llt.decode_bytes([token])
    return limit


def in_json_string(fmt: str, call: bytes) -> bool:
    """Whether a JSON call is inside a string (its text there does not change closing's cost)."""
    return fmt == "json_tools" and _json_close(call).startswith(b'"')


@functools.lru_cache(maxsize=4)
def plain_text(llt: Any) -> np.ndarray:
    """A mask of the tokens with neither `"` nor `\\`: inside a JSON string they leave the
    text that closes the call, so its cost, as it was."""
    bits = np.zeros(((llt.vocab_size + 31) // 32) * 32, dtype=np.uint8)
    for data, i in token_ids(llt).items():
        if data and b'"' not in data and b"\\" not in data:
            bits[i] = 1
    return np.packbits(bits, bitorder="little").view(np.int32).reshape(1, -1)
