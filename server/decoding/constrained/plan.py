"""Decide and compile a request's call constraint (HTTP side, at render time, before any 200).

A forced `tool_choice` constrains the reply from its first token; `auto` constrains a call's
body once the model opens one. A schema llguidance cannot enforce is a 400 naming the tool.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

from server.decoding.constrained.formats import SUPPORTED, reply_grammar
from server.errors import BadRequest

log = logging.getLogger("server.engine")
_WARNED: set[str] = set()
_SMALLEST: dict[tuple[str, str, str], int] = {}  # by grammar: one dry run per tool set


@dataclass
class CallConstraint:
    grammar: str
    forced: bool
    fmt: str
    opener: int | None  # the one token that opens a call (auto: the body is constrained after)
    tokenizer: Any  # the llguidance tokenizer
    end: str = ""  # the call's end marker
    matcher: Any = None  # compiled here for the first use; later ones compile their own

    def __getstate__(self) -> dict:
        # Ranks receive rendered prompts pickled (engine.lockstep): llguidance's objects are not
        # picklable; each rank rebuilds them from its own tokenizer (`attach`).
        return {**self.__dict__, "tokenizer": None, "matcher": None}

    def attach(self, tokenizer: Any) -> CallConstraint:
        """This constraint with llguidance's view of `tokenizer` (after unpickling)."""
        if self.tokenizer is None:
            self.tokenizer = ll_tokenizer(tokenizer)
        return self

    def smallest_reply(self) -> int:
        """Tokens the shortest valid forced reply takes: closing's dry run from the first token
        (the end of turn not counted: a complete call needs no budget for it)."""
        key = (self.grammar, self.fmt, self.end)
        if key not in _SMALLEST:
            from server.decoding.constrained import closing

            matcher = self.matcher or self.new_matcher()
            end = self.tokenizer.decode_bytes(self.tokenizer.tokenize_str(self.end))
            steps = closing.steps_to_close(matcher, self.tokenizer, self.fmt, b"", end, 4096)
            if len(_SMALLEST) >= 256:  # tool sets seen long ago: measured again if they return
                _SMALLEST.clear()
            _SMALLEST[key] = steps - 1
        return _SMALLEST[key]

    def new_matcher(self):
        import llguidance

        matcher, self.matcher = self.matcher, None
        if matcher is None:
            matcher = llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)
        return matcher


def tool_format(tokenizer: Any) -> str | None:
    """The mlx-lm tool parser module's short name (`json_tools`, `qwen3_coder`, ...)."""
    module = getattr(getattr(tokenizer, "tool_parser", None), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] or None


def can_constrain(tokenizer: Any) -> bool:
    """Whether calls in this tokenizer's tool syntax get a grammar."""
    return tool_format(tokenizer) in SUPPORTED


@functools.lru_cache(maxsize=4)
def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of the model's tokenizer (about a second at 150K tokens: cached)."""
    from llguidance.hf import from_tokenizer

    eos = sorted(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    return from_tokenizer(tokenizer._tokenizer, eos_token=eos)


def _marker(llt: Any, text: str) -> str:
    """A call marker in the grammar: the special token itself, or its text."""
    ids = llt.tokenize_str(text)
    if len(ids) == 1 and llt.is_special_token(ids[0]):
        return f"<[{ids[0]}]>"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def failed_construct(message: str) -> str:
    """The part of llguidance's error that names what failed (not the grammar it echoes)."""
    text = message.split("failed to compile JSON schema: ", 1)[-1]
    return re.split(r"\n\s+\d+ \|", text, maxsplit=1)[0].strip()


def plan(
    tokenizer: Any, tools: list[dict] | None, choice: str | None, parallel: bool = True
) -> CallConstraint | None:
    """The constraint for a request, or None (no tools, `none`, or a syntax we cannot write)."""
    fmt = tool_format(tokenizer)
    if not tools or choice == "none" or fmt not in SUPPORTED:
        return None
    forced = choice not in (None, "auto")
    allowed = tools if choice in (None, "auto", "required") else None
    if allowed is None:
        allowed = [t for t in tools if t["function"]["name"] == choice]
        if not allowed:
            raise BadRequest(f"tool_choice names an unknown tool: {choice!r}", param="tool_choice")
    try:
        llt = ll_tokenizer(tokenizer)
    except Exception as exc:  # not a fast HF tokenizer: calls stay unconstrained
        log.warning("tool calls unconstrained: no llguidance tokenizer (%s)", exc)
        return None
    start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
    opener = llt.tokenize_str(start)
    matcher, grammar = _compile(llt, fmt, allowed, start, end, forced, parallel, lenient=False)
    if matcher is None and not forced:
        # `auto` worked before constraints: keep what can be enforced rather than refuse.
        matcher, grammar = _compile(llt, fmt, allowed, start, end, forced, parallel, lenient=True)
        if matcher is not None and grammar not in _WARNED:
            _WARNED.add(grammar)  # once per tool set, not on every request
            log.warning("tool schemas partly enforced under auto (unsupported keywords skipped)")
    if matcher is None:
        _refuse(llt, fmt, allowed, start, end)
    opener_id = opener[0] if len(opener) == 1 else None
    return CallConstraint(grammar, forced, fmt, opener_id, llt, end, matcher)


def _compile(llt, fmt, tools, start, end, forced, parallel, lenient):
    import llguidance

    marker = functools.partial(_marker, llt)
    try:
        lark = reply_grammar(
            fmt, tools, marker, start, end, forced=forced, parallel=parallel, lenient=lenient
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, ""
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    matcher = llguidance.LLMatcher(llt, grammar, log_level=0)
    return (None, grammar) if matcher.is_error() else (matcher, grammar)


def _refuse(llt, fmt, tools, start, end) -> None:
    """Find the tool whose schema fails on its own and say which construct it is."""
    import llguidance

    marker = functools.partial(_marker, llt)
    for tool in tools:
        name = tool["function"]["name"]
        try:
            lark = reply_grammar(fmt, [tool], marker, start, end, forced=True, parallel=False)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            construct = str(exc)
        else:
            grammar = llguidance.LLMatcher.grammar_from_lark(lark)
            bad, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, llt)
            if not bad:
                continue
            construct = failed_construct(messages[0])
        raise BadRequest(
            f"tool {name!r}: its input schema cannot be enforced ({construct})", param="tools"
        )
    raise BadRequest("the tools' schemas cannot be enforced together", param="tools")
