"""A resumed reply: the front door re-sends a stream a worker died in with the tokens that worker
had sampled, and they become this reply's first tokens, as if sampled here (generation thread,
but `extend`, which the HTTP side calls).

The prompt plus them prefills as one prompt (the prefix cache serves the prompt as usual); the
logits processors advance over them on their verify path (a verify whose drafts all count); the
reply parser and detokenizer are fed them, so their events replay from the reply's start, and
`max_tokens` and stop sequences count them. Decoding goes on after them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from server.errors import BadRequest
from server.prompt.render import Rendered

CHUNK = 32  # positions a processor is advanced over at once (their rows of logits)


def extend(
    rendered: Rendered, resume: list[int], eos: set[int], limit: int, vocab: int
) -> Rendered:
    """The prompt with the reply's resumed tokens after it. They stop before an end of turn (its
    Finished never went out: it is sampled again) and leave at least one token to decode, which
    ends the reply where the resumed ones reached its limit."""
    if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab for t in resume):
        raise BadRequest(f"resumed tokens must be token ids below {vocab}")
    kept: list[int] = []
    for token in resume[: max(0, limit - 1)]:
        if token in eos:
            break
        kept.append(token)
    if not kept:
        return rendered
    return dataclasses.replace(rendered, tokens=[*rendered.tokens, *kept], resumed=len(kept))


def resumed_tokens(rendered: Rendered) -> list[int]:
    return rendered.tokens[len(rendered.tokens) - rendered.resumed :] if rendered.resumed else []


def fast_forward(processors: list[Any], rendered: Rendered) -> None:
    """Leave each processor as plain decoding leaves it once it sampled the resumed tokens: the
    fed tokens are the prompt's last, then each resumed one but the last (which decoding feeds
    next). Each position's logits pick the token that was sampled there."""
    import mlx.core as mx

    resumed = resumed_tokens(rendered)
    if not resumed or not processors:
        return
    fed = [rendered.tokens[rendered.prompt_tokens - 1], *resumed[:-1]]
    vocab = max(fed + resumed) + 1
    for start in range(0, len(fed), CHUNK):
        part, picked = fed[start : start + CHUNK], resumed[start : start + CHUNK]
        logits = mx.zeros((len(part), vocab))
        logits[mx.arange(len(part)), mx.array(picked)] = 1.0
        for processor in processors:
            if hasattr(processor, "process_many") and hasattr(processor, "commit"):
                processor.process_many(part, logits)
                processor.commit(len(part))
            else:  # one position at a time, as plain decoding shows it
                for i in range(len(part)):
                    seen = mx.array(rendered.tokens[: rendered.prompt_tokens + start + i])
                    processor(seen, logits[i : i + 1])


def replay(job: Any, generated: list[int], parser: Any, detokenizer: Any) -> None:
    """Feed the resumed tokens to the reply's parser and detokenizer, emitting their events (and
    their mark first, where asked) as if each had just been sampled."""
    resumed = resumed_tokens(job.rendered)
    if not resumed:
        return
    if job.request.token_marks:
        job.sampled.extend(resumed)
    for token in resumed:
        generated.append(token)
        detokenizer.add_token(token)
        for event in parser.feed(detokenizer.last_segment):
            job.emit(event)
