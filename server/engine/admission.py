"""Whether a waiting job may start prefilling now (generation thread only): the batch and prefill
slots, shared prefills, and memory.

Memory is planned on what the device really has: its limit less what MLX holds now (weights, KV,
the prefix cache's RAM tier, the buffer pool), less what the prefix cache may still add, less what
the running sequences may still grow to (their prompt and whole reply, and a draft model's cache
of them). A job that does not fit first makes room (the pool, the draft model's kept caches, then
the cache's RAM tier), else waits; the HTTP side keeps its client alive meanwhile. A user's
`--kv-budget-bytes` replaces the plan: the sequences' KV estimates alone are held to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from server.engine.batch_limits import kv_bytes_per_token, store_reserve
from server.engine.job import Job
from server.engine.prefill_task import PrefillTask
from server.engine.runner import Runner
from server.model.kv_state import host_reads_move_buffers
from server.model.memory import DeviceMemory, device_limit, release_pool
from server.model.memory import snapshot as memory_snapshot
from server.speculative.draft_store import DraftCaches

log = logging.getLogger("server.engine")

SHED_WRITE_S = 2.0  # a shed writes dirty entries this long before dropping the RAM tier


@dataclass
class Relief:
    """A way to free device memory for a waiting job, tried at most once per `every_s`."""

    name: str
    free: Callable[[], int]  # frees what it can; the bytes freed
    every_s: float
    last: float = float("-inf")

    def try_now(self, now: float) -> int:
        if now - self.last < self.every_s:
            return 0
        self.last = now
        return self.free()


@dataclass
class Admission:
    kv_per_token: int  # one token's KV bytes (0: unknown shape, not gated on memory)
    decode_concurrency: int  # sequences decoding in one batch
    prompt_concurrency: int  # prompts prefilling at once
    memory: Callable[[], DeviceMemory]  # the device's limit and what MLX holds now
    limit: tuple[int, str] = (0, "")  # the device's limit and its source, for the log
    cache_growth: Callable[[], int] = lambda: 0  # what the prefix cache may still add
    kv_budget: int | None = None  # the user's --kv-budget-bytes
    draft_kv_per_token: int = 0  # a draft model's, beside it: a reply may draft with it
    reliefs: list[Relief] = field(default_factory=list)  # cheapest first
    last: dict = field(default_factory=dict)  # the last memory check, for /v1/status
    waited: int = 0  # jobs that waited for memory since start

    def estimate(self, prompt_tokens: int, max_tokens: int) -> int:
        """The KV bytes a sequence may grow to: its prompt and its whole reply (and its draft
        model's cache of them)."""
        return (self.kv_per_token + self.draft_kv_per_token) * (prompt_tokens + max_tokens)

    def fits(
        self, job: Job, estimate: int, running: list[tuple[int, int]], prefilling: int
    ) -> bool:
        """Whether `job`, of `estimate` KV bytes, may start beside the running sequences, given
        as (estimate, KV bytes held now); with nothing running anything fits, so a lone prompt
        always starts (after making what room it can)."""
        busy = len(running)
        if busy and (busy >= self.decode_concurrency or prefilling >= self.prompt_concurrency):
            return False
        if self.kv_budget is not None:
            free = self.kv_budget - sum(e for e, _ in running)
            room = free >= estimate
        else:
            free, room = self._room(estimate, pending=sum(max(0, e - h) for e, h in running))
        if room or not busy:  # alone it runs on what there is: nothing else can make room
            return True
        if not job.waits_for_memory:
            job.waits_for_memory = True
            self.waited += 1
            log.info(
                "request %s waits for memory (%.2f GB needed, %.2f GB free)",
                job.request.request_id,
                estimate / 1e9,
                free / 1e9,
            )
        return False

    def _room(self, estimate: int, pending: int) -> tuple[int, bool]:
        """(free bytes, whether `estimate` fits them), making room first where it does not."""
        if (free := self._free(pending)) >= estimate:
            return free, True
        for relief in self.reliefs:  # cheapest first
            if (freed := relief.try_now(time.monotonic())) > 0:
                log.info("admission: %s freed %.2f GB for a request", relief.name, freed / 1e9)
                if (free := self._free(pending)) >= estimate:
                    return free, True
        return free, False

    def _free(self, pending: int) -> int:
        memory = self.memory()
        growth = self.cache_growth()
        free = memory.plannable - growth - pending
        self.last = {
            "limit_bytes": memory.limit,
            "limit_source": memory.source,
            "active_bytes": memory.active,
            "pool_bytes": memory.pool,
            "cache_growth_bytes": growth,
            "pending_kv_bytes": pending,
            "free_bytes": free,
        }
        return free

    def status(self) -> dict:
        return {
            **self.last,
            "kv_budget_bytes": self.kv_budget,
            "kv_bytes_per_token": self.kv_per_token,
            "waited_for_memory": self.waited,
        }


def on_device(runner: Runner, held_kv: Callable[[], list[tuple[int, int]]]) -> Admission:
    """Admission for this worker's device; `held_kv()` gives each running sequence's (KV
    estimate, KV bytes held now)."""
    settings = runner.settings
    limit = device_limit()
    copies = host_reads_move_buffers()

    def shed() -> int:  # dirty entries are written first: a shed costs RAM, not history
        return runner.cache.shed(SHED_WRITE_S)["freed_bytes"] + release_pool()

    reliefs = [Relief("the buffer pool", release_pool, every_s=1.0)]
    if (drafts := runner.draft_caches) is not None:  # cheaper to prefill a draft again
        reliefs.append(Relief("the draft model's kept caches", lambda: _shed(drafts), every_s=5.0))
    reliefs.append(Relief("the prefix cache's RAM tier", shed, every_s=30.0))
    draft = runner.draft
    return Admission(
        kv_per_token=kv_bytes_per_token(runner.loaded.model),
        draft_kv_per_token=kv_bytes_per_token(draft.model) if draft is not None else 0,
        decode_concurrency=settings.decode_concurrency,
        prompt_concurrency=settings.prompt_concurrency,
        memory=lambda: memory_snapshot(limit),
        limit=limit,
        cache_growth=lambda: store_reserve((e for e, _ in held_kv()), copies),
        kv_budget=settings.kv_budget_bytes,
        reliefs=reliefs,
    )


def _shed(drafts: DraftCaches) -> int:
    """The draft caches' bytes, dropped and given back to the device (MLX pools freed buffers)."""
    freed = drafts.shed()
    release_pool()
    return freed


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
