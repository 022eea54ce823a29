"""Whether a waiting job may start prefilling now (generation thread only): its KV estimate
against the memory budget, the batch and prefill slots, and shared prefills."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from server.engine.job import Job
from server.engine.prefill_task import PrefillTask

log = logging.getLogger("server.engine")


@dataclass
class Admission:
    kv_per_token: int  # an upper estimate of one token's KV bytes (0: not gated on memory)
    budget: int  # bytes the running sequences' KV may use
    decode_concurrency: int  # sequences decoding in one batch
    prompt_concurrency: int  # prompts prefilling at once

    def estimate(self, prompt_tokens: int, max_tokens: int) -> int:
        """The KV bytes a sequence may grow to: its prompt and its whole reply."""
        return self.kv_per_token * (prompt_tokens + max_tokens)

    def fits(self, estimate: int, decoding: Iterable[int], prefills: list[PrefillTask]) -> bool:
        """Whether a sequence of `estimate` bytes may join those decoding (their estimates) and
        prefilling; with nothing running anything fits, so a lone prompt always starts."""
        decoding = list(decoding)
        busy = len(decoding) + len(prefills)
        if not busy:
            return True
        in_use = sum(decoding) + sum(t.estimate for t in prefills)
        return (
            in_use + estimate <= self.budget
            and busy < self.decode_concurrency
            and len(prefills) < self.prompt_concurrency
        )


def waits_for_shared_prefill(job: Job, prefills: Iterable[PrefillTask]) -> bool:
    """Whether a prompt still prefilling shares a long prefix with this job: the job then waits
    for that prompt's checkpoint instead of computing the same state again."""
    for task in prefills:
        if not (shared := task.shares_unfinished(job.rendered.tokens)):
            continue
        if job.waits_on != id(task):
            job.waits_on = id(task)
            log.info(
                "request %s waits for the prefill of %s (%d shared tokens)",
                job.request.request_id,
                task.job.request.request_id,
                shared,
            )
        return True
    return False
