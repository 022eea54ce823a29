"""Structured output: a reply whose whole text is JSON valid against a schema (llguidance).

The grammar is compiled here, on the HTTP side at render time, so a strict schema it cannot
enforce is a 400 before any 200; the same CallProcessor then keeps the reply inside it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from server.decoding.constrained.formats import json_schema
from server.decoding.constrained.plan import CallConstraint, failed_construct, ll_tokenizer
from server.errors import BadRequest

log = logging.getLogger("server.engine")

# The CallConstraint format of a JSON reply: no call markers, nothing to close or stream.
JSON_TEXT = "json_text"


@functools.lru_cache(maxsize=64)
def _compile(llt: Any, lark: str) -> tuple[str, str | None]:
    """(grammar, error): llguidance's compiled grammar, or why it failed."""
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    matcher = llguidance.LLMatcher(llt, grammar, log_level=0)
    return grammar, (failed_construct(matcher.get_error()) if matcher.is_error() else None)


def plan_text(tokenizer: Any, schema: dict, *, strict: bool, name: str = "") -> CallConstraint:
    """The constraint for a JSON reply valid against `schema`. A strict schema llguidance cannot
    enforce is a 400 naming the construct; a non-strict one is enforced as far as it can be."""
    try:
        llt = ll_tokenizer(tokenizer)
    except Exception as exc:  # not a fast HF tokenizer: nothing to constrain with
        raise BadRequest(
            f"structured output is not available for this model's tokenizer ({exc})",
            param="text.format",
        ) from None
    grammar, error = _compile(llt, f"start: {json_schema(schema)}\n")
    if error is not None and not strict:
        grammar, lenient_error = _compile(llt, f"start: {json_schema(schema, lenient=True)}\n")
        if lenient_error is None:
            log.warning("text.format %r: schema partly enforced (unsupported keywords)", name)
            error = None
    if error is not None:
        raise BadRequest(
            f"text.format schema {name!r} cannot be enforced ({error})", param="text.format"
        )
    return CallConstraint(grammar, forced=True, fmt=JSON_TEXT, opener=None, tokenizer=llt)
