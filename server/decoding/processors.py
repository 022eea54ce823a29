"""Per-request logits processors: where a request's own decoding constraints plug in.

mlx-lm calls each processor as `processor(tokens, logits) -> logits` before sampling, on both
paths (`stream_generate` alone, `BatchGenerator` batched). The last of `tokens` is the token
being fed in: the prompt's last one on the first call, the previously sampled token after that.
Decoding runs one step ahead, so a processor may be called once more after the reply's last token.
Processors built here run on the generation thread only.
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
