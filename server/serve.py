"""Run the worker: the composition root (engine, prefix cache, warm prompts, app), uvicorn, and
graceful shutdown in one place."""

from __future__ import annotations

import functools
import logging
import os
import signal

import uvicorn

from server.app import create_app
from server.engine import Engine
from server.settings import Settings, stop_budget

log = logging.getLogger("server")


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


def build_engine(settings: Settings, cache_factory=None) -> Engine:
    """`cache_factory(loaded_model) -> PrefixCache` plugs a prefix cache in (see
    prefix_cache.seam); without one, the settings' prefix KV cache unless it is turned off.
    Warm prompts are read here and prefilled by the engine itself once the model loads."""
    if cache_factory is None:
        from server.prefix_cache.factory import cache_factory as settings_cache

        cache_factory = settings_cache(settings)
    from server.model_loading import load_model

    engine = Engine(
        settings.model_path,
        load_fn=functools.partial(load_model, tool_parser=settings.tool_parser),
        max_queue=settings.max_queue,
        max_output_tokens=settings.max_output_tokens,
        prefill_step_size=settings.prefill_step_size,
        cache_factory=cache_factory,
        progress_timeout=settings.progress_timeout,
        # MLXCTL_SCHEDULER=sequential: one request at a time, as before batching (benchmarks).
        batch=os.environ.get("MLXCTL_SCHEDULER", "batched") != "sequential",
    )
    if settings.warm_prompts and cache_factory is not None:
        from server.warm import read_prompts

        engine.warm(read_prompts(settings.warm_prompts))
    return engine


def serve(settings: Settings, engine: Engine | None = None, cache_factory=None) -> int:
    engine = engine or build_engine(settings, cache_factory)
    request_grace, flush_s = stop_budget(settings)
    # The HTTP server comes up first (503 on /health) while the model loads on its own thread.
    engine.start()
    config = uvicorn.Config(
        create_app(settings, engine),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(request_grace + 1),
        lifespan="off",
    )
    server = _Server(config, engine, request_grace)
    log.info("worker for %s on http://%s:%d", settings.model, settings.host, settings.port)
    server.run()
    engine.stop(timeout=flush_s + 1)  # the cache's flush fits `flush_s` (factory)
    log.info("worker stopped")
    return 0 if server.started else 1
