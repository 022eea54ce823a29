"""Admin routes: /health, /v1/status, /metrics, and the prefix cache's GET and DELETE /v1/cache.

Behind the same API-key check as every other route except /health (the middleware). Memory
figures come from the engine's snapshot, so no handler here calls MLX. The /v1/cache handlers
are plain `def`: FastAPI runs them on a worker thread, so a disk clear never blocks the loop.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from server.api.cache_why import explain
from server.errors import BadRequest, NotFound, ServiceUnavailable
from server.metrics import prometheus_text
from server.prefix_cache.seam import UnknownTier

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    engine = request.app.state.engine
    if engine.load_error:
        # "error" (not "loading"): a supervisor must give up, not wait; the reason says why.
        reason = f"model failed to load: {engine.load_error}"
        return JSONResponse({"status": "error", "error": reason}, 503)
    if not engine.ready:
        return JSONResponse({"status": "loading"}, 503)
    if engine.died:
        # "stuck" (not "error"): a restart helps, as for a hang; the reason says what happened.
        reason = f"generation thread died: {engine.died}"
        return JSONResponse({"status": "stuck", "error": reason}, 503)
    stuck = engine.watchdog.check()
    if stuck:
        # Up but not working: a supervisor restarts it (`status` then says why).
        return JSONResponse({"status": "stuck", "error": stuck}, 503)
    return {"status": "ok"}


@router.get("/v1/status")
async def status(request: Request):
    engine, settings = request.app.state.engine, request.app.state.settings
    return {
        "model": settings.model,
        "model_path": settings.model_path,
        "state": "ready" if engine.ready else ("failed" if engine.load_error else "loading"),
        "uptime_seconds": round(time.time() - engine.started_at, 3),
        "pid": os.getpid(),
        "backend": getattr(engine.loaded, "backend", None),
        "context_length": engine.renderer.context_length if engine.renderer else None,
        "memory": engine.memory(),
        "queue_depth": engine.queue_depth,
        "max_queue": settings.max_queue,
        "max_output_tokens": settings.max_output_tokens,
        # Generations run at once (one today); `mlxctl claude` sizes tool concurrency by it.
        "batch_capacity": getattr(engine, "batch_capacity", 1),
        # mode (batched or sequential and why), running, waiting, batch size, tokens/s.
        "scheduler": engine.scheduler_status(),
        # Across machines: each rank's number, host and pid (empty for one process).
        "ranks": list(getattr(engine.scheduler, "ranks", None) or []),
        # The mlx-lm tool parser and why (chat template, --tool-parser, fallback).
        "tool_parser": getattr(engine.loaded, "tool_parser", None),
        # What becomes of a request's tools: a template that drops them is said here.
        "tools": engine.renderer.tools_status() if engine.renderer else None,
        # Whether the model reads images (else each becomes a note); None while loading.
        "images": engine.renderer.images is not None if engine.renderer else None,
        "requests": engine.metrics.snapshot(),
        "cache": engine.cache.stats(),
        "recent": _recent(request),
    }


def _recent(request: Request) -> list[dict]:
    ring = getattr(request.app.state, "ring", None)
    return ring.recent() if ring is not None else []


@router.get("/metrics")
async def metrics(request: Request):
    engine = request.app.state.engine
    memory = engine.memory()
    gauges = {
        "queue_depth": engine.queue_depth,
        "ready": int(engine.ready),
        "uptime_seconds": round(time.time() - engine.started_at, 3),
        "memory_active_bytes": memory["active_bytes"],
        "memory_peak_bytes": memory["peak_bytes"],
        "memory_rss_bytes": memory["rss_bytes"],
    }
    scheduler = engine.scheduler_status()
    for name in ("running", "waiting", "batch_size", "tokens_per_second"):
        gauges[f"scheduler_{name}"] = scheduler.get(name) or 0
    speculative = scheduler.get("speculative")  # only the batched scheduler drafts
    text = prometheus_text(engine.metrics.snapshot(), gauges, engine.cache.stats(), speculative)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/v1/cache")
def list_cache(request: Request):
    cache = request.app.state.engine.cache
    return {"enabled": cache.enabled, "entries": cache.list_entries()}


@router.delete("/v1/cache")
def clear_cache(request: Request, tier: Literal["ram", "disk", "both"] = "both"):
    cache = request.app.state.engine.cache
    try:
        freed = cache.clear(tier)
        if tier != "ram" and (kept := request.app.state.last_request) is not None:
            kept.forget()
    except UnknownTier as exc:
        raise BadRequest(str(exc), param="tier") from None
    except OSError as exc:  # the cache disk failed under it (read-only, replaced): say so
        raise ServiceUnavailable(f"the cache disk failed: {exc}", retry_after=60) from None
    return {"tier": tier, "freed_bytes": freed, "stats": cache.stats()}


@router.post("/v1/cache/shed")
def shed_cache(request: Request, budget_s: Annotated[float, Query(ge=0, le=600)] = 10.0):
    """The supervisor's soft memory limit: write dirty entries, then free the RAM tier."""
    cache = request.app.state.engine.cache
    return {**cache.shed(budget_s), "stats": cache.stats()}


@router.get("/v1/cache/why")
def cache_why(request: Request, request_id: str | None = None):
    """Where a recent request's prompt left the nearest earlier one (`mlxctl cache why`)."""
    engine, ring = request.app.state.engine, getattr(request.app.state, "ring", None)
    if engine.renderer is None or ring is None:
        raise ServiceUnavailable("the model is still loading", retry_after=2)
    report = explain(ring, request_id, engine.loaded.tokenizer, engine.renderer.encoder)
    if report is None:
        which = f"request {request_id!r}" if request_id else "a request"
        raise NotFound(f"{which} is not among the last generations this worker keeps")
    return report
