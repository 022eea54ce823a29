"""Run the worker: the composition root (engine, prefix cache, warm prompts, app), uvicorn, and
graceful shutdown in one place."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from server.api.app import create_app
from server.api.last_request import LastRequest
from server.engine.engine import Engine, SchedulerFactory
from server.engine.job import JobQueue
from server.engine.runner import Runner
from server.engine.scheduler import Scheduler
from server.model.loading import LoadedModel
from server.settings import Settings, stop_budget

log = logging.getLogger("server")
LOAD_FAILURE_LINGER_S = 60.0


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, stop taking jobs and give the running one a grace."""

    def __init__(self, config: uvicorn.Config, engine: Engine, grace_s: float):
        super().__init__(config)
        self.engine = engine
        self.grace_s = grace_s

    def handle_exit(self, sig, frame) -> None:
        # Like uvicorn's, minus re-raising the signal at exit: a graceful stop exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        if not self.should_exit:
            log.info("signal %s: shutting down (in-flight requests get %.0fs)", sig, self.grace_s)
            self.engine.begin_shutdown(self.grace_s)
        self.should_exit = True


def _test_processors() -> list | None:
    """Tests and benchmarks may force replies (server.testing.forcing); None: the defaults."""
    from server.decoding.processors import default_factories

    path = os.environ.get("MLXCTL_TEST_FORCE_REPLIES")
    if not path:
        return None
    from server.testing.forcing import force_factory

    return [*default_factories(), force_factory(path)]


def build_engine(settings: Settings, cache_factory=None, group=None, rank=None) -> Engine:
    """`cache_factory(loaded_model) -> PrefixCache` plugs a prefix cache in (see
    prefix_cache.seam); without one, the settings' prefix KV cache unless it is turned off.
    Warm prompts are read here and prefilled by the engine itself once the model loads.
    With a distributed `group` (server.model.distributed), this rank's part of the engine."""
    if cache_factory is None:
        from server.prefix_cache.factory import cache_factory as settings_cache

        cache_factory = settings_cache(settings)
    from server.model.loading import load_model

    load_fn: Callable[[str], LoadedModel]
    load_fn = functools.partial(load_model, tool_parser=settings.tool_parser)
    scheduler_factory: SchedulerFactory | None = None
    if group is not None:  # ranks load their shard (no --tool-parser there yet)
        load_fn, scheduler_factory = _rank_parts(group, rank)
        if cache_factory is not None:
            cache_factory = _agreed(cache_factory, group)
    engine = Engine(
        settings,
        load_fn=load_fn,
        cache_factory=cache_factory,
        scheduler_factory=scheduler_factory,
        processor_factories=_test_processors(),
    )
    if settings.warm_prompts and cache_factory is not None:
        from server.api.warm_prompts import read_prompts

        engine.warm(read_prompts(settings.warm_prompts))
    kept = last_request_path(settings) if cache_factory is not None else None
    if kept is not None and kept.is_file():
        from server.api.warm_prompts import read_prompts

        engine.replay(read_prompts([str(kept)]))
    return engine


def last_request_path(settings: Settings) -> Path | None:
    """Where the newest request is kept for a restart's replay: beside the disk tier, if any."""
    if not settings.cache_enabled or not settings.cache_dir or settings.cache_disk_bytes == 0:
        return None
    from server.prefix_cache.disk_index import LAST_REQUEST

    return Path(settings.cache_dir) / LAST_REQUEST


def _rank_parts(group, rank) -> tuple[Callable[[str], LoadedModel], SchedulerFactory]:
    """What a rank's engine needs: its shard of the model and the lockstep scheduler."""
    from server.engine.lockstep import LockstepScheduler
    from server.model.loading import load_model_shard

    def load_fn(path: str) -> LoadedModel:
        return load_model_shard(path, group, rank)

    def scheduler_factory(runner: Runner, queue: JobQueue) -> Scheduler:
        return LockstepScheduler(runner, queue, group)

    return load_fn, scheduler_factory


def _agreed(cache_factory, group):
    """Each rank's own prefix cache, with lookups all ranks agree on."""
    from server.prefix_cache.ranks import AgreedCache

    return lambda loaded: AgreedCache(cache_factory(loaded), group)


def follow(engine: Engine, grace_s: float) -> int:
    """A rank other than 0: no HTTP, the same generation as rank 0 until rank 0 closes it.
    SIGTERM reaches the whole group; this rank then waits for rank 0's stop, at most `grace_s`
    (mlx.launch stops the others with SIGTERM when one rank dies)."""

    def on_signal(sig, frame) -> None:
        log.info("signal %s: following rank 0's stop (at most %.0fs)", sig, grace_s)
        timer = threading.Timer(grace_s, lambda: os._exit(1))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine.start()
    engine.join()
    if engine.load_error:
        # Stay until the supervisor reads rank 0's "failed" /health (a retry cannot help) and
        # stops the group: leaving now would restart it as a crash.
        time.sleep(LOAD_FAILURE_LINGER_S)
        return 1
    from server.engine.lockstep import LockstepScheduler

    scheduler = engine.scheduler
    closed = isinstance(scheduler, LockstepScheduler) and scheduler.lockstep.closed
    log.info("rank stopped (%s)", "rank 0 closed the group" if closed else "lost the group")
    return 0 if closed else 1


def serve(settings: Settings, engine: Engine | None = None, cache_factory=None) -> int:
    group, rank = None, None
    if engine is None:
        from server.model.distributed import join_group

        group, rank = join_group(settings.parallel)
        engine = build_engine(settings, cache_factory, group, rank)
    request_grace, flush_s = stop_budget(settings)
    if rank is not None and rank.rank > 0:
        return follow(engine, request_grace + flush_s)
    # The HTTP server comes up first (503 on /health) while the model loads on its own thread.
    engine.start()
    kept = last_request_path(settings)
    app = create_app(settings, engine, LastRequest(kept) if kept is not None else None)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(request_grace + 1),
        lifespan="off",
        loop="asyncio",  # not uvloop where one is installed: the worker is measured on this
        # No WebSocket protocol: an upgrade stays a plain GET, which the Responses route answers
        # 405 (with a WebSocket library installed, uvicorn would refuse it 403 itself).
        ws="none",
    )
    server = _Server(config, engine, request_grace)
    shard = f" (rank 0 of {rank.size}, {rank.parallel} parallel)" if rank and rank.size > 1 else ""
    log.info("worker for %s on http://%s:%d%s", settings.model, settings.host, settings.port, shard)
    server.run()
    app.store.close()  # the traces still queued
    engine.stop(timeout=flush_s + 1)  # the cache's flush fits `flush_s` (factory)
    log.info("worker stopped")
    return 0 if server.started else 1
