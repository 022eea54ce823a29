"""`mlxctl cache stats` as people read it: entries and bytes per tier, and a running worker's
lookups, reuse and cache life cycle (each model's and their sum when there are several)."""

from __future__ import annotations

from mlxctl.cli.output import output
from mlxctl.units import human_bytes, human_duration


def show_stats(stats: dict) -> None:
    """The tiers table, the lifetime disk writes, then each running worker's lines."""
    models = stats.get("models")
    if models is None:
        output.table("tier", "entries", "bytes", "budget", rows=tier_rows(stats))
    else:
        rows = [(one["name"], *row) for one in models for row in tier_rows(one)]
        rows += [("all", *row) for row in tier_rows(stats)]
        output.table("model", "tier", "entries", "bytes", "budget", rows=rows)
    disk = stats.get("disk") or {}
    written = disk.get("bytes_written_total")
    if written is not None:
        output.print(f"disk bytes written (lifetime): {human_bytes(written)}")
    for one in models or [stats]:
        if one["source"] == "worker":
            prefix = f"{one['name']}: " if models else ""
            for line in worker_lines(one):
                output.print(prefix + line)
    if models and "hits" in stats:  # the sums over the running workers
        for line in worker_lines(stats):
            output.print(f"all: {line}")


def tier_rows(stats: dict) -> list[tuple[str, str, str, str]]:
    """(tier, entries, bytes, budget) for the RAM and disk tiers; "?" where unknown."""
    rows = []
    for tier in ("ram", "disk"):
        t = stats.get(tier)
        if t is None:
            rows.append((tier, "?", "?", "-"))
            continue
        budget = t.get("budget_bytes")
        shown = "10% of RAM" if isinstance(budget, int) and budget < 0 else human_bytes(budget)
        rows.append((tier, str(t.get("entries", 0)), human_bytes(t.get("bytes", 0)), shown))
    return rows


def worker_lines(stats: dict) -> list[str]:
    """A running worker's lookups, tokens reused, prefill time saved and cache life cycle."""
    hit_rate = stats.get("hit_rate")
    reuse = stats.get("token_reuse_rate")
    lines = [
        f"lookups: {stats.get('hits', 0)} hits, {stats.get('misses', 0)} misses"
        + (f" (hit rate {hit_rate:.0%})" if isinstance(hit_rate, float) else ""),
        f"tokens reused: {stats.get('tokens_reused', 0)}"
        + (f" ({reuse:.0%} of prompt tokens)" if isinstance(reuse, float) else ""),
    ]
    saved = stats.get("prefill_seconds_saved")
    if isinstance(saved, int | float):
        lines.append(f"prefill time saved: {human_duration(saved)}")
    return lines + life_cycle_lines(stats)


def life_cycle_lines(stats: dict) -> list[str]:
    """The worker's write-behind and restore figures (absent from older workers: no lines)."""
    lines = []
    if "dirty_entries" in stats:
        delay = stats.get("write_behind_s")
        when = f"{delay:g}s after a change" if isinstance(delay, int | float) else "on stop only"
        lines.append(
            f"write-behind ({when}): {stats['dirty_entries']} dirty entries, "
            f"{human_bytes(stats.get('bytes_written_behind') or 0)} written behind"
        )
    restore = stats.get("restore")
    if isinstance(restore, dict) and restore.get("mode"):
        seconds = restore.get("seconds")
        took = f", last in {seconds:.2f}s" if isinstance(seconds, int | float) else ""
        lines.append(f"restore: {restore['mode']}{took}")
    return lines
