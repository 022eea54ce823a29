"""One request at a time (warm prompts, seeded requests, models that cannot batch): chunked
prefill with checkpoints, then mlx-lm's `stream_generate` (generation thread only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.job import Cancelled, Job
from server.reply_parser import ReplyParser
from server.request import Sampling
from server.watchdog import Watchdog


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


def _beat_then(watchdog: Watchdog, progress: Callable[[int, int], None], done: int, total: int):
    watchdog.beat()
    progress(done, total)


def sampler(s: Sampling):
    """mlx-lm's sampler for these settings, after seeding MLX's generator when a seed is given."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    if s.seed is not None:
        mx.random.seed(s.seed)
    return make_sampler(temp=s.temperature, top_p=s.top_p if s.top_p < 1.0 else 0.0, top_k=s.top_k)


def generate_alone(
    engine: Any, job: Job, run: Generation, parser: ReplyParser, max_tokens: int
) -> None:
    """Prefill the uncached tokens (storing the checkpoints an untrimmable cache needs on
    the way) and decode into `run`, emitting the parsed events."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    from server.prefill import prefill_prompt

    tokens = job.rendered.tokens
    start, run.checkpointed = prefill_prompt(
        engine.loaded.model,
        run.prompt_cache,
        tokens,
        run.n_cached,
        job.rendered.system_len,
        step=engine.prefill_step_size,
        on_chunk=lambda n: _beat_then(engine.watchdog, job.on_prefill_progress, n, len(tokens)),
        store=lambda n, kind: engine._store(tokens[:n], run.prompt_cache, kind=kind),
    )
    run.prefilled = True
    for response in stream_generate(
        engine.loaded.model,
        engine.loaded.tokenizer,
        mx.array(tokens[start:]),
        max_tokens=max_tokens,
        sampler=sampler(job.request.sampling),
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
