"""`mlxctl cache ...`: list, summarise, clear and prune the prefix KV cache."""

from __future__ import annotations

import time

import typer

from mlxctl import exit_codes
from mlxctl.cli.output import output
from mlxctl.units import human_bytes, human_duration, parse_duration

cache_app = typer.Typer(
    help="See and manage the prefix KV cache (RAM and disk tiers).\n\nWith a running worker the "
    "commands go through it; without one they work on the disk tier alone.",
    no_args_is_help=True,
)


def _notes(notes: list[str]) -> None:
    for note in notes:
        output.note(note)


def _ago(timestamp: float | None) -> str:
    return f"{human_duration(time.time() - timestamp)} ago" if timestamp else "-"


@cache_app.command("ls")
def ls_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List cache entries, most recently used first: tier, tokens, bytes, last used, model."""
    from mlxctl import cache_admin

    listing = cache_admin.list_entries()
    if as_json:
        output.json(listing.to_dict())
        return
    _notes(listing.notes)
    if not listing.entries:
        output.print("the cache is empty")
        return
    rows = [
        (
            e.get("tier", "?"),
            str(e.get("tokens", "-")),
            human_bytes(e.get("bytes")),
            _ago(e.get("last_used")),
            _model_of(e),
            str(e.get("id", ""))[:12],
        )
        for e in listing.entries
    ]
    output.table("tier", "tokens", "bytes", "last used", "model / release", "id", rows=rows)
    total = sum(int(e.get("bytes") or 0) for e in listing.entries)
    output.print(f"{len(listing.entries)} entries, {human_bytes(total)}")


def _model_of(entry: dict) -> str:
    model = entry.get("model_name") or entry.get("model") or "-"
    if entry.get("model_name") and entry.get("model"):
        model = f"{entry['model_name']} ({entry['model']})"
    if entry.get("release"):
        model += f" / {entry['release']}"
    return model


@cache_app.command("stats")
def stats_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Entries and bytes per tier, hit rate, tokens reused, disk bytes written."""
    from mlxctl import cache_admin

    stats = cache_admin.stats()
    if as_json:
        output.json(stats)
        return
    _notes(stats["notes"])
    rows = []
    for tier in ("ram", "disk"):
        t = stats.get(tier)
        if t is None:
            rows.append((tier, "?", "?", "-"))
            continue
        budget = t.get("budget_bytes")
        rows.append(
            (tier, str(t.get("entries", 0)), human_bytes(t.get("bytes", 0)), human_bytes(budget))
        )
    output.table("tier", "entries", "bytes", "budget", rows=rows)
    disk = stats.get("disk") or {}
    written = disk.get("bytes_written_total")
    if written is not None:
        output.print(f"disk bytes written (lifetime): {human_bytes(written)}")
    if stats["source"] == "worker":
        hit_rate = stats.get("hit_rate")
        reuse = stats.get("token_reuse_rate")
        output.print(
            f"lookups: {stats.get('hits', 0)} hits, {stats.get('misses', 0)} misses"
            + (f" (hit rate {hit_rate:.0%})" if isinstance(hit_rate, float) else "")
        )
        output.print(
            f"tokens reused: {stats.get('tokens_reused', 0)}"
            + (f" ({reuse:.0%} of prompt tokens)" if isinstance(reuse, float) else "")
        )
        saved = stats.get("prefill_seconds_saved")
        if isinstance(saved, int | float):
            output.print(f"prefill time saved: {human_duration(saved)}")
        for line in life_cycle_lines(stats):
            output.print(line)


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


def _run(plan, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Preview the plan, then (unless --dry-run) confirm, act and report the bytes freed."""
    from mlxctl import cache_admin

    tier_word = "" if plan.tier == "both" else f"{plan.tier} "
    what = f"{len(plan.entries)} {tier_word}entries"
    if not as_json:
        _notes(plan.notes)
    if dry_run:
        if as_json:
            output.json({**plan.to_dict(), "dry_run": True, "freed_bytes": 0})
        else:
            size = human_bytes(plan.bytes)
            output.print(f"would free {size} ({what}); nothing deleted (dry run)")
        return
    if not plan.entries:
        if as_json:
            output.json({**plan.to_dict(), "dry_run": False, "freed_bytes": 0})
        else:
            output.print("nothing to delete")
        return
    question = f"delete {what} ({human_bytes(plan.bytes)})?"
    if not output.confirm(question, yes=yes, action="delete cache entries"):
        output.print("nothing deleted")
        raise typer.Exit(exit_codes.FAILURE)
    shown = len(plan.notes)
    freed = cache_admin.act(plan)
    if not as_json:
        _notes(plan.notes[shown:])
    if as_json:
        output.json({**plan.to_dict(), "dry_run": False, "freed_bytes": freed})
    else:
        output.print(f"freed {human_bytes(freed)} ({freed} bytes, {what})")


@cache_app.command("clear")
def clear_command(
    ram: bool = typer.Option(False, "--ram", help="Only the RAM tier (needs a running worker)."),
    disk: bool = typer.Option(False, "--disk", help="Only the disk tier."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be freed; delete nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; required without a terminal."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete cache entries (both tiers unless --ram or --disk) and report the bytes freed."""
    from mlxctl import cache_admin

    tier = "ram" if ram and not disk else "disk" if disk and not ram else "both"
    _run(cache_admin.plan_clear(tier), dry_run, yes, as_json)


@cache_app.command("prune")
def prune_command(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age since last use: 7d, 12h, 1d12h, 90m, 30s."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be freed; delete nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; required without a terminal."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete disk entries not used for longer than --older-than; report the bytes freed."""
    from mlxctl import cache_admin

    _run(cache_admin.plan_prune(parse_duration(older_than)), dry_run, yes, as_json)


@cache_app.command("why")
def why_command(
    request_id: str = typer.Argument(
        None, help="A request id from `mlxctl status` (a prefix will do); default: the last."
    ),
    last: bool = typer.Option(False, "--last", help="The newest request (the default)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Why a recent request missed the cache: the prefix it found, and where its prompt left
    the nearest earlier one (system block N, the tools list, message N), with excerpts."""
    from mlxctl import cache_admin
    from mlxctl.cli.cache_why_view import show_why

    report = cache_admin.why(None if last else request_id)
    if as_json:
        output.json(report)
        return
    show_why(report)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
