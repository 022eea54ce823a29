"""Per-request logits processors: where a request's own decoding constraints plug in.

mlx-lm calls each processor as `processor(tokens, logits) -> logits` before sampling, on both
paths (`stream_generate` alone, `BatchGenerator` batched). The last of `tokens` is the token
being fed in: the prompt's last one on the first call, the previously sampled token after that.
Decoding runs one step ahead, so a processor may be called once more after the reply's last token.
Processors built here run on the generation thread only.

A processor may also offer a verify step's batch path: `process_many(fed, logits) -> rows`
masks every position at once as if each draft is accepted (`fed[i]` is fed at position i and
`logits[i]` scores the token after it; it may give fewer rows, stopping before a draft it knows
cannot be accepted), and `commit(kept)` then leaves the state plain decoding leaves after the
first `kept` positions. A processor without it is shown a verify's positions one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.decoding.reasoning_budget import budget_factory

log = logging.getLogger("server.engine")

LogitsProcessor = Callable[[Any, Any], Any]
# A factory sees the request, its rendered prompt and the loaded model; None: nothing to add.
ProcessorFactory = Callable[[Any, Any, Any], LogitsProcessor | None]


def all_at_once(processors: list) -> bool:
    """Whether every processor has the batch path (a verify samples its positions at once)."""
    return all(hasattr(p, "process_many") and hasattr(p, "commit") for p in processors)


def default_factories() -> list[ProcessorFactory]:
    """The processors every worker applies, in order (reasoning budgets, constrained calls)."""
    from server.decoding.constrained.processor import factory as constrained_calls

    return [budget_factory, constrained_calls]


def processors_for(factories: list[ProcessorFactory], job: Any, loaded: Any) -> list:
    """The processors `job` decodes with: each factory's, in order."""
    out = []
    for factory in factories:
        processor = factory(job.request, job.rendered, loaded)
        if processor is not None:
            out.append(processor)
    return out
