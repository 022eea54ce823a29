"""Admin routes of the prefix cache: GET /v1/cache lists entries, DELETE /v1/cache clears a tier.

Behind the same API-key check as every other route (the middleware). Plain `def` handlers:
FastAPI runs them on a worker thread, so a disk clear never blocks the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.errors import BadRequest

router = APIRouter()
TIERS = ("ram", "disk", "both")


@router.get("/v1/cache")
def list_cache(request: Request):
    cache = request.app.state.engine.cache
    lister = getattr(cache, "list_entries", None)
    return {"enabled": lister is not None, "entries": lister() if lister else []}


@router.delete("/v1/cache")
def clear_cache(request: Request, tier: str = "both"):
    if tier not in TIERS:
        raise BadRequest(f"tier must be one of ram, disk, both (got {tier!r})", param="tier")
    cache = request.app.state.engine.cache
    clear = getattr(cache, "clear", None)
    freed = clear(tier) if clear else 0
    return {"tier": tier, "freed_bytes": freed, "stats": cache.stats()}
