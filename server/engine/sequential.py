"""One request at a time (warm prompts, seeded requests, models that cannot batch): chunked
prefill with checkpoints, then mlx-lm's `stream_generate` (generation thread only)."""

from __future__ import annotations

import dataclasses
import logging
import time

from server.decoding.reply_parser import ReplyParser
from server.engine import resume
from server.engine.job import Cancelled, Generation, Job
from server.engine.runner import Runner
from server.errors import InternalError
from server.request import ChatRequest, Failed, Sampling, Started, Usage

log = logging.getLogger("server.engine")


def run_alone(runner: Runner, job: Job) -> None:
    """Run `job` to its end on its own; a failure fails only it."""
    job.admitted = time.perf_counter()
    runner.running_alone = job
    runner.watchdog.begin(f"request {job.request.request_id}")
    try:
        _run(runner, job)
    except Exception:  # one bad request must not take the worker down
        log.exception("generation failed for request %s", job.request.request_id)
        job.emit(Failed(InternalError()))
    finally:
        runner.watchdog.end()
        runner.settle()
        runner.snapshot_memory()
        job.done = True
        runner.running_alone = None


def _run(runner: Runner, job: Job) -> None:
    if job.cancelled:
        return runner.finish_cancelled(job, Usage(), 0.0)
    tokens = job.rendered.tokens
    prompt_cache, n_cached = runner.cache_for(tokens, job.rendered.images)
    prompt = job.rendered.prompt_tokens  # a resumed reply's first tokens are none of it
    usage = Usage(prompt_tokens=prompt, cached_tokens=min(n_cached, prompt))
    job.emit(Started(usage.prompt_tokens, usage.cached_tokens))
    parser = runner.parser(job)
    runner.attach_processors(job)
    run = Generation(prompt_cache, n_cached)
    try:
        generate_alone(runner, job, run, parser, runner.decode_limit(job))
    except Cancelled:
        if not run.prefilled:
            # A prefill cut short keeps what it computed: a retry resumes from there.
            runner.store(tokens, run.prompt_cache)
            log.info("prefill cancelled; kept its KV state for a retry")
        usage.completion_tokens = len(run.generated)
        return runner.finish_cancelled(job, usage, time.perf_counter() - run.started, run)
    runner.finish(job, run, parser, usage)


def generate_alone(
    runner: Runner, job: Job, run: Generation, parser: ReplyParser, max_tokens: int
) -> None:
    """Prefill the uncached tokens (storing the checkpoints an untrimmable cache needs on
    the way) and decode into `run`, emitting the parsed events."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    from server.engine.prefill import embedder_for, prefill_prompt, sampler_for

    tokens = job.rendered.tokens
    prompt_cache = run.prompt_cache
    assert prompt_cache is not None, "a generation alone extends its own cache"
    start, run.checkpointed = prefill_prompt(
        runner.loaded.model,
        prompt_cache,
        tokens,
        run.n_cached,
        job.rendered.system_len,
        turn_start=job.rendered.turn_start,
        step=runner.settings.prefill_step_size,
        on_chunk=runner.watchdog.beating(lambda n: job.on_prefill_progress(n, len(tokens))),
        store=lambda n, kind: runner.store(tokens[:n], prompt_cache, kind=kind),
        embed=embedder_for(runner.loaded, job.rendered),
    )
    run.prefilled = True
    # A resumed reply's tokens go through one detokenizer with the rest: a character split
    # across where it resumed still decodes whole.
    detokenizer = runner.loaded.tokenizer.detokenizer if job.rendered.resumed else None
    if detokenizer is not None:
        resume.replay(job, run.generated, parser, detokenizer)
    marks = job.request.token_marks
    for response in stream_generate(
        runner.loaded.model,
        runner.loaded.tokenizer,
        mx.array(tokens[start:]),
        max_tokens=max_tokens,
        sampler=sampler_for(job.request.sampling),
        logits_processors=job.logits_processors or None,
        prompt_cache=prompt_cache,
    ):
        runner.watchdog.beat()
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
        if job.cancelled:
            raise Cancelled
        run.generated.append(response.token)
        if marks:  # ahead of its events: the front door resumes by it
            job.sampled.append(response.token)
        text = response.text
        if detokenizer is not None:  # as member.Member.take does
            if response.finish_reason != "stop":
                detokenizer.add_token(response.token)
            if response.finish_reason:
                detokenizer.finalize()
            text = detokenizer.last_segment
        for event in parser.feed(text):
            job.emit(event)
        if parser.stopped:
            run.reason = "stop_sequence"
            break
        if response.finish_reason:
            run.reason = response.finish_reason


def warm_up(runner: Runner, prompts: list[tuple[str, ChatRequest]]) -> None:
    """Prefill each (name, request) through the request path before ready, so its prompt's KV
    state is in the cache; a prompt that fails is logged and skipped, never fatal."""
    for name, request in prompts:
        try:
            _warm_one(runner, name, request)
        except Exception as exc:
            log.error("warm prompt %s skipped: %s", name, exc)


def _warm_one(runner: Runner, name: str, request: ChatRequest) -> None:
    """One greedy token: its prompt's KV state lands in the cache."""
    rendered = runner.renderer.render(request)
    greedy = dataclasses.replace(request, sampling=Sampling(temperature=0.0))
    job = Job(request=greedy, rendered=rendered, loop=None)
    tokens = rendered.tokens
    prompt_cache, n_cached = runner.cache_for(tokens, rendered.images)
    run = Generation(prompt_cache, n_cached)
    generate_alone(runner, job, run, runner.parser(job), max_tokens=1)
    seconds = (run.first_token_at or time.perf_counter()) - run.started
    runner.record_prefill(len(tokens) - n_cached, seconds)
    if not run.checkpointed:
        runner.store(tokens[:-1], prompt_cache)
    log.info(
        "warm prompt %s: %d tokens (%d already cached) in %.1fs",
        name,
        len(tokens),
        n_cached,
        seconds,
    )
