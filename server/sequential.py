"""One request at a time (warm prompts, seeded requests, models that cannot batch): chunked
prefill with checkpoints, then mlx-lm's `stream_generate` (generation thread only)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.job import Cancelled, Job
from server.reply_parser import ReplyParser


@dataclass
class Generation:
    """One generation's running state: the KV cache it extends and what it produced so far."""

    prompt_cache: list[Any]
    n_cached: int
    generated: list[int] = field(default_factory=list)
    reason: str = "length"
    first_token_at: float | None = None
    prefilled: bool = False  # the prompt (all but its last token) is in prompt_cache
    checkpointed: bool = False  # exact checkpoints were stored: the final state is not
    started: float = field(default_factory=time.perf_counter)


def generate_alone(
    engine: Any, job: Job, run: Generation, parser: ReplyParser, max_tokens: int
) -> None:
    """Prefill the uncached tokens (storing the checkpoints an untrimmable cache needs on
    the way) and decode into `run`, emitting the parsed events."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    from server.prefill import prefill_prompt, sampler_for

    tokens = job.rendered.tokens
    start, run.checkpointed = prefill_prompt(
        engine.loaded.model,
        run.prompt_cache,
        tokens,
        run.n_cached,
        job.rendered.system_len,
        turn_start=job.rendered.turn_start,
        step=engine.prefill_step_size,
        on_chunk=engine.watchdog.beating(lambda n: job.on_prefill_progress(n, len(tokens))),
        store=lambda n, kind: engine._store(tokens[:n], run.prompt_cache, kind=kind),
    )
    run.prefilled = True
    for response in stream_generate(
        engine.loaded.model,
        engine.loaded.tokenizer,
        mx.array(tokens[start:]),
        max_tokens=max_tokens,
        sampler=sampler_for(job.request.sampling),
        logits_processors=job.logits_processors or None,
        prompt_cache=run.prompt_cache,
    ):
        engine.watchdog.beat()
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
        if job.cancelled:
            raise Cancelled
        run.generated.append(response.token)
        for event in parser.feed(response.text):
            job.emit(event)
        if parser.stopped:
            run.reason = "stop_sequence"
            break
        if response.finish_reason:
            run.reason = response.finish_reason
