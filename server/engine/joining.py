"""A prefilled prompt starts decoding: alone on its own cache when nothing else decodes, else
inserted into mlx-lm's batch with its last prompt token (generation thread only)."""

from __future__ import annotations

from typing import Any

from server.engine import resume
from server.engine.member import Member
from server.engine.prefill_task import PrefillTask
from server.engine.runner import Runner
from server.engine.solo_decode import SOLO_UID, SoloDecode


def start_decoding(
    runner: Runner, gen: Any, task: PrefillTask, stop_sequences: Any, *, alone: bool, drafts: bool
) -> Member:
    """The member `task`'s job decodes as: alone (drafting where `drafts` and the runner say so),
    or in `gen`, which then holds the cache."""
    from server.engine.prefill import sampler_for

    job, run = task.job, task.run
    tokens = job.rendered.tokens
    parser = runner.parser(job)
    detokenizer = runner.loaded.tokenizer.detokenizer
    sampler = sampler_for(job.request.sampling)
    cache = run.prompt_cache
    assert cache is not None, "a prefilled prompt holds its cache until it joins"
    run.prefilled = True
    resume.replay(job, run.generated, parser, detokenizer)  # a resumed reply's first tokens
    if alone:
        drafting = runner.drafting(job) if drafts else None  # only a lone one drafts
        run.drafts = drafting.record if drafting is not None else None
        solo = SoloDecode(
            runner.loaded.model,
            cache,
            tokens,
            task.end,
            max_tokens=task.max_tokens,
            sampler=sampler,
            logits_processors=job.logits_processors,
            stop_sequences=stop_sequences,
            drafting=drafting,
        )
        return Member(job, SOLO_UID, run, parser, detokenizer, task.estimate, solo)
    (uid,) = gen.insert(
        [tokens[task.end :]],
        max_tokens=[task.max_tokens],
        caches=[cache],
        all_tokens=[tokens[: task.end]],
        samplers=[sampler],
        logits_processors=[job.logits_processors],
        stop_sequences=[stop_sequences],
    )
    run.prompt_cache = None  # the batch holds its own copy now
    return Member(job, uid, run, parser, detokenizer, task.estimate)
