"""The core of `mlxctl cache ls/stats/clear/prune` for one model: no Typer, no Rich, no mlx.

With a running worker it goes through the worker's admin endpoints (the worker owns its RAM tier
and writes the disk tier); without one it reads and edits the disk tier's index directly.
Which models and where each lives: cache_targets.py; all of them at once: cache_across.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import server.prefix_cache.disk_index as disk_index
from mlxctl import config, paths
from mlxctl.errors import CacheAdminError, MlxctlError, WorkerRefused, WorkerUnavailable
from mlxctl.worker_client import WorkerClient

TIERS = ("ram", "disk", "both")
NO_WORKER_NOTE = "no worker runs, so the RAM tier is empty; showing the disk tier"
T = TypeVar("T")


def kv_root() -> Path:
    """The default model's disk tier (one folder per model fingerprint)."""
    return paths.kv_cache_dir()


# -- where the cache lives right now ----------------------------------------------------------


@dataclass
class Target:
    """A running worker (`url` set) or the disk tier alone (`url` None)."""

    url: str | None
    model: str | None = None
    release: str | None = None
    notes: list[str] = field(default_factory=list)
    # The served model's name where `[models.NAME]` entries are configured (rows and notes
    # carry it); None when the default is the only model, as before them.
    name: str | None = None
    folder: Path | None = None  # its disk tier; None: the default's
    settings: dict | None = None  # its effective cache keys (budgets); None: the config's

    @property
    def disk(self) -> Path:
        return self.folder or kv_root()

    def note(self, text: str) -> str:
        return f"{self.name}: {text}" if self.name else text


def target() -> Target:
    """The worker when the supervisor reports it RUNNING, else the disk tier."""
    from mlxctl.status import status

    try:
        now = status(probe=False)
    except Exception:
        return Target(None)
    if not now.running or not now.url:
        return Target(None)
    return Target(now.url, now.model, now.release)


def _ask(url: str, call: Callable[[WorkerClient], T]) -> T:
    """One cache request to the worker. WorkerUnavailable (gone, or an older worker without
    the endpoint) passes through: the callers fall back to the disk index."""
    try:
        return call(WorkerClient.configured(url))
    except WorkerRefused as exc:
        raise CacheAdminError(str(exc), hint=exc.hint) from exc


def _fallback_note(where: Target, reason: str) -> str:
    return where.note(f"{reason}; showing the disk tier from its index (RAM entries unknown)")


# -- ls ----------------------------------------------------------------------------------------


@dataclass
class Listing:
    source: str  # "worker" or "disk" ("mixed" across models)
    entries: list[dict]
    notes: list[str] = field(default_factory=list)
    models: list[dict] | None = None  # across several models: each one's source and totals

    def to_dict(self) -> dict:
        out = {"source": self.source, "entries": self.entries, "notes": self.notes}
        return out if self.models is None else {**out, "models": self.models}


def list_entries(where: Target | None = None) -> Listing:
    """Every entry, most recently used first: tier, id, tokens, bytes, created, last_used, model
    (and `served_model`, the name it is served by, where [models.NAME] entries exist)."""
    where = where or target()
    if where.url:
        try:
            rows = _ask(where.url, WorkerClient.cache_list)
            for row in rows:
                row.setdefault("release", where.release)
                row.setdefault("model_name", where.model)
            rows.sort(key=lambda r: r.get("last_used") or 0, reverse=True)
            return Listing("worker", _named(where, rows))
        except WorkerUnavailable as exc:
            return Listing("disk", _disk_rows(where), [_fallback_note(where, str(exc))])
    return Listing("disk", _disk_rows(where), [where.note(NO_WORKER_NOTE)])


def _named(where: Target, rows: list[dict]) -> list[dict]:
    if where.name:
        for row in rows:
            row["served_model"] = where.name
    return rows


def _disk_rows(where: Target) -> list[dict]:
    return _named(where, disk_index.list_entries(where.disk))


# -- stats -------------------------------------------------------------------------------------


def _budget(where: Target, key: str) -> int | None:
    try:
        return int((where.settings or config.load())[key])
    except Exception:
        return None


def _empty_ram(where: Target) -> dict:
    return {"entries": 0, "bytes": 0, "budget_bytes": _budget(where, "cache.ram_bytes")}


def _disk_totals(where: Target) -> dict:
    per_model = disk_index.disk_stats(where.disk)
    return {
        "entries": sum(m["entries"] for m in per_model.values()),
        "bytes": sum(m["bytes"] for m in per_model.values()),
        "budget_bytes": _budget(where, "cache.disk_bytes"),
        "bytes_written_total": sum(m["bytes_written"] for m in per_model.values()),
        "models": per_model,
        "folder": str(where.disk),
    }


def stats(where: Target | None = None) -> dict:
    """{"source", "ram", "disk", "notes", ...counters}: the worker's cache stats when it runs."""
    where = where or target()
    if where.url:
        try:
            cache = _ask(where.url, WorkerClient.status).get("cache")
            if isinstance(cache, dict):
                out = {"source": "worker", **cache, "notes": []}
                out["ram"] = cache.get("ram") or _empty_ram(where)
                out["disk"] = cache.get("disk") or _disk_totals(where)
                return out
            reason = "the worker reports no prefix cache in /v1/status"
        except WorkerUnavailable as exc:
            reason = str(exc)
        return {
            "source": "disk",
            "ram": None,
            "disk": _disk_totals(where),
            "notes": [_fallback_note(where, reason)],
        }
    return {
        "source": "disk",
        "ram": _empty_ram(where),
        "disk": _disk_totals(where),
        "notes": [where.note(NO_WORKER_NOTE)],
    }


# -- clear / prune: plan, then act -------------------------------------------------------------


@dataclass
class Plan:
    """What a clear or prune would remove; `act` carries it out and returns bytes freed."""

    action: str  # "clear" or "prune"
    tier: str
    source: str  # "worker" or "disk"
    entries: list[dict]
    notes: list[str] = field(default_factory=list)
    older_than_seconds: float | None = None
    url: str | None = None
    folder: Path | None = None  # the disk tier it acts on; None: the default's
    name: str | None = None  # the served model's name, as Target.name

    @property
    def bytes(self) -> int:
        return sum(int(e.get("bytes") or 0) for e in self.entries)

    def to_dict(self) -> dict:
        return {
            "action": self.action,
            "tier": self.tier,
            "source": self.source,
            "entries": len(self.entries),
            "bytes": self.bytes,
            "older_than_seconds": self.older_than_seconds,
            "notes": self.notes,
            **({"model": self.name} if self.name else {}),
        }


def _tiers(tier: str) -> tuple[str, ...]:
    if tier not in TIERS:
        raise MlxctlError(f"unknown cache tier {tier!r}", hint="one of: ram, disk, both")
    return ("ram", "disk") if tier == "both" else (tier,)


def plan_clear(tier: str = "both", where: Target | None = None) -> Plan:
    """Entries of `tier` that a clear would remove (from the worker's list when it runs)."""
    tiers = _tiers(tier)
    where = where or target()
    listing = list_entries(where)
    entries = [e for e in listing.entries if e.get("tier") in tiers]
    notes = list(listing.notes)
    url = where.url if listing.source == "worker" else None
    if listing.source == "disk" and "ram" in tiers and where.url:
        notes.append(
            where.note("the RAM tier cannot be cleared without the worker's /v1/cache endpoint")
        )
    return Plan("clear", tier, listing.source, entries, notes, url=url, folder=where.folder,
                name=where.name)  # fmt: skip


def plan_prune(older_than_seconds: float, where: Target | None = None) -> Plan:
    """Disk entries not used for `older_than_seconds` (the worker keeps its RAM tier by LRU)."""
    where = where or target()
    cutoff = time.time() - older_than_seconds
    entries = [e for e in _disk_rows(where) if (e.get("last_used") or 0) < cutoff]
    notes = [] if where.url is None else [where.note("the running worker's RAM tier is not pruned")]
    return Plan("prune", "disk", "disk", entries, notes, older_than_seconds=older_than_seconds,
                folder=where.folder, name=where.name)  # fmt: skip


def act(plan: Plan) -> int:
    """Carry out `plan`; returns the bytes actually freed."""
    folder = plan.folder or kv_root()
    if plan.action == "prune":
        assert plan.older_than_seconds is not None  # plan_prune always sets it
        return disk_index.prune(folder, plan.older_than_seconds)
    if plan.url:
        try:
            body = _ask(plan.url, lambda client: client.cache_clear(plan.tier))
            return _freed(body, plan)
        except WorkerUnavailable as exc:
            # It went away between plan and act (a restart): the disk part still can be done.
            plan.notes.append(_fallback_note(Target(None, name=plan.name), str(exc)))
    if plan.tier == "ram":
        return 0
    return disk_index.clear(folder)


def _freed(body, plan: Plan) -> int:
    """The freed-bytes number from the worker's answer, whatever it names it."""
    if isinstance(body, int):
        return body
    if isinstance(body, dict):
        for key in ("freed_bytes", "bytes_freed", "freed", "bytes"):
            if isinstance(body.get(key), int):
                return body[key]
    return plan.bytes


def why(request_id: str | None = None, where: Target | None = None) -> dict:
    """The running worker's account of where a recent request left the prefix cache."""
    where = where or target()
    if where.url is None:
        raise CacheAdminError(
            where.note("no worker is running"),
            hint="`cache why` asks the worker about its recent requests",
        )
    return _ask(where.url, lambda client: client.cache_why(request_id))
