"""`mlxctl cache` over several served models at once: one listing with each entry's model,
each model's stats with their sum, one clear or prune made of each model's plan.

With one target every function gives exactly what cache_admin gives for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlxctl.cache_admin import Listing, Plan, Target, act, list_entries, stats, why
from mlxctl.errors import MlxctlError

TIER_SUMS = ("entries", "bytes", "budget_bytes", "bytes_written_total")
# The running workers' counters that add up across models (their rates are worked out again).
COUNTER_SUMS = ("hits", "ram_hits", "disk_hits", "misses", "lookup_tokens", "tokens_reused",
                "prefill_seconds_saved")  # fmt: skip


def _source(sources: list[str]) -> str:
    return sources[0] if len(set(sources)) == 1 else "mixed"


def _size(entries: list[dict]) -> int:
    return sum(int(e.get("bytes") or 0) for e in entries)


def list_all(targets: list[Target]) -> Listing:
    """Every model's entries, most recently used first, each with its `served_model`."""
    listings = [list_entries(where) for where in targets]
    if len(listings) == 1:
        return listings[0]
    entries = [e for listing in listings for e in listing.entries]
    entries.sort(key=lambda e: e.get("last_used") or 0, reverse=True)
    models = [
        {"name": where.name, "source": listing.source, "entries": len(listing.entries),
         "bytes": _size(listing.entries)}
        for where, listing in zip(targets, listings, strict=True)
    ]  # fmt: skip
    notes = [note for listing in listings for note in listing.notes]
    return Listing(_source([lst.source for lst in listings]), entries, notes, models)


def sum_tier(tiers: list[dict | None]) -> dict:
    """One tier's totals across models: a model whose tier is unknown (None) adds nothing,
    a budget only some models report sums what is known, an automatic one makes it None."""
    known = [t for t in tiers if isinstance(t, dict)]
    out: dict = {"entries": 0, "bytes": 0}
    for key in TIER_SUMS:
        values = [t[key] for t in known if isinstance(t.get(key), int)]
        if values or key in out:
            # A negative budget is the worker's own sizing (cache.ram_bytes -1): no sum to tell.
            out[key] = None if any(v < 0 for v in values) else sum(values)
    if len(known) < len(tiers):
        out["unknown_models"] = len(tiers) - len(known)
    return out


def stats_all(targets: list[Target]) -> dict:
    """Each model's stats under `models` (its `name` added) and the tiers' sums on top."""
    each = [stats(where) for where in targets]
    if len(each) == 1:
        return each[0]
    for where, one in zip(targets, each, strict=True):
        one["name"] = where.name
    return {
        "source": _source([one["source"] for one in each]),
        "ram": sum_tier([one.get("ram") for one in each]),
        "disk": sum_tier([one.get("disk") for one in each]),
        **sum_counters(each),
        "notes": [note for one in each for note in one["notes"]],
        "models": each,
    }


def sum_counters(each: list[dict]) -> dict:
    """The lookup counters summed over the models whose worker answered, with the hit and token
    reuse rates of the sums; nothing when no worker did."""
    counted = [one for one in each if one["source"] == "worker"]
    if not counted:
        return {}
    out = {}
    for key in COUNTER_SUMS:
        values = [one[key] for one in counted if isinstance(one.get(key), int | float)]
        if values:
            out[key] = sum(values)
    lookups = out.get("hits", 0) + out.get("misses", 0)
    out["hit_rate"] = out.get("hits", 0) / lookups if lookups else 0.0
    asked = out.get("lookup_tokens", 0)
    out["token_reuse_rate"] = out.get("tokens_reused", 0) / asked if asked else 0.0
    return out


def why_any(request_id: str | None, targets: list[Target]) -> dict:
    """`cache why` over several models: the running worker that knows the request (or, with no
    id, the one whose last request is the newest), its report naming the model."""
    running = [where for where in targets if where.url]
    if len(targets) == 1 or not running:
        return why(request_id, targets[0])
    reports, refusals = [], []
    for where in running:
        try:
            reports.append({**why(request_id, where), "served_model": where.name})
        except MlxctlError as exc:  # not among its recent requests, or no endpoint
            refusals.append(exc)
    if not reports:
        raise refusals[0]
    return max(reports, key=lambda report: report.get("time") or 0)


@dataclass
class Across:
    """A clear or prune over several models: `whole` sums them, for the preview and question."""

    plans: list[Plan]

    @property
    def whole(self) -> Plan:
        first = self.plans[0]
        entries = [e for plan in self.plans for e in plan.entries]
        notes = [note for plan in self.plans for note in plan.notes]
        source = _source([plan.source for plan in self.plans])
        return Plan(first.action, first.tier, source, entries, notes,
                    older_than_seconds=first.older_than_seconds,
                    name=None if self.several else first.name)  # fmt: skip

    @property
    def several(self) -> bool:
        return len(self.plans) > 1

    def act(self) -> list[int]:
        """Each plan carried out (a model with nothing to remove is left alone); bytes freed."""
        return [act(plan) if plan.entries or not self.several else 0 for plan in self.plans]
