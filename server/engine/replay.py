"""Before ready after a restart: replay the newest request once, storing nothing.

The first turn after a restart continues the newest conversation, so it would pay every first-use
cost itself: the chat template and tool grammar compiled, llguidance's tokenizer built, the
restored entry copied where the model reads it (MLX CUDA pages host-made arrays in on first use),
the kernels at that context length loaded. One replayed token pays them before `/health` says
ready, where the supervisor already waits. After a crash the newest turn's entry may not have
reached the disk: a replay that prefilled it stores it, so the next turn starts from it. One that
would prefill much (its entry is gone) only renders: a restart must not wait for a cold prefill.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from server.engine.job import Generation, Job
from server.engine.runner import Runner
from server.engine.sequential import generate_alone
from server.request import ChatRequest, Sampling

log = logging.getLogger("server.cache")

FED = 64  # tokens run again where the cache can undo them: the prefill kernels, not only decode's
MOST_UNCACHED = 512  # more than this to prefill and the replay only renders


def replay_last(runner: Runner, prompts: list[tuple[str, ChatRequest]]) -> None:
    """Replay each (name, request); a failure is logged and skipped, never fatal."""
    for name, request in prompts:
        try:
            _replay_one(runner, name, request)
        except Exception as exc:
            log.warning("kv cache: replay of %s skipped: %s", name, exc)


def _replay_one(runner: Runner, name: str, request: ChatRequest) -> None:
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    started = time.perf_counter()
    rendered = runner.renderer.render(request)
    greedy = dataclasses.replace(request, sampling=Sampling(temperature=0.0))
    job = Job(request=greedy, rendered=rendered, loop=None)
    runner.attach_processors(job)  # the tool grammar, llguidance's tokenizer on its first use
    tokens = rendered.tokens
    prompt_cache, n_cached = runner.cache_for(tokens, rendered.images)
    uncached = len(tokens) - n_cached
    if uncached > MOST_UNCACHED:
        log.info("kv cache: replayed %s's render only (%d tokens not cached)", name, uncached)
        return
    extra = min(FED - uncached, n_cached) if can_trim_prompt_cache(prompt_cache) else 0
    if extra > 0:
        trim_prompt_cache(prompt_cache, extra)
        n_cached -= extra
    run = Generation(prompt_cache, n_cached)
    generate_alone(runner, job, run, runner.parser(job), max_tokens=1)
    stored = uncached > 1 and not run.checkpointed  # new KV state, not what the entry held
    if stored:
        runner.store(tokens[:-1], prompt_cache)
    log.info(
        "kv cache: replayed %s (%d tokens, %d run%s) in %.2fs",
        name,
        len(tokens),
        len(tokens) - n_cached,
        ", stored" if stored else "",
        time.perf_counter() - started,
    )
