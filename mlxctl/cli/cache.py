"""`mlxctl cache ...`: list, summarise, clear and prune the prefix KV cache."""

from __future__ import annotations

import time

import typer

from mlxctl import exit_codes
from mlxctl.cli.output import output
from mlxctl.units import human_bytes, human_duration, parse_duration

cache_app = typer.Typer(
    help="See and manage the prefix KV cache (RAM and disk tiers).\n\nWith a running worker the "
    "commands go through it; without one they work on the disk tier alone. With [models.NAME] "
    "entries they cover every served model, or the one --model names.",
    no_args_is_help=True,
)
MODEL_HELP = "Only this served model (its name or an alias); default: every model."


def _targets(model: str | None) -> list:
    from mlxctl import cache_targets

    return cache_targets.served().pick(model)


def _notes(notes: list[str]) -> None:
    for note in notes:
        output.note(note)


def _ago(timestamp: float | None) -> str:
    return f"{human_duration(time.time() - timestamp)} ago" if timestamp else "-"


@cache_app.command("ls")
def ls_command(
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List cache entries, most recently used first: tier, tokens, bytes, last used, model."""
    from mlxctl import cache_across

    listing = cache_across.list_all(_targets(model))
    if as_json:
        output.json(listing.to_dict())
        return
    _notes(listing.notes)
    if not listing.entries:
        output.print("the cache is empty")
        return
    named = any("served_model" in e for e in listing.entries)
    rows = [
        (
            *((e.get("served_model", "-"),) if named else ()),
            e.get("tier", "?"),
            str(e.get("tokens", "-")),
            human_bytes(e.get("bytes")),
            _ago(e.get("last_used")),
            _model_of(e),
            str(e.get("id", ""))[:12],
        )
        for e in listing.entries
    ]
    loaded = "loaded as / release" if named else "model / release"
    columns = ("model",) * named + ("tier", "tokens", "bytes", "last used", loaded, "id")
    output.table(*columns, rows=rows)
    for one in listing.models or []:
        output.print(f"{one['name']}: {one['entries']} entries, {human_bytes(one['bytes'])}")
    total = sum(int(e.get("bytes") or 0) for e in listing.entries)
    across = f" across {len(listing.models)} models" if listing.models else ""
    output.print(f"{len(listing.entries)} entries, {human_bytes(total)}{across}")


def _model_of(entry: dict) -> str:
    model = entry.get("model_name") or entry.get("model") or "-"
    if entry.get("model_name") and entry.get("model"):
        model = f"{entry['model_name']} ({entry['model']})"
    if entry.get("release"):
        model += f" / {entry['release']}"
    return model


@cache_app.command("stats")
def stats_command(
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Entries and bytes per tier, hit rate, tokens reused, disk bytes written; with several
    models, each one's and their sum."""
    from mlxctl import cache_across
    from mlxctl.cli.cache_stats_view import show_stats

    stats = cache_across.stats_all(_targets(model))
    if as_json:
        output.json(stats)
        return
    _notes(stats["notes"])
    show_stats(stats)


def _run(across, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Preview the plan, then (unless --dry-run) confirm once, act on each model's part and
    report the bytes freed (per model, when there are several)."""
    plan = across.whole
    tier_word = "" if plan.tier == "both" else f"{plan.tier} "
    what = f"{len(plan.entries)} {tier_word}entries"
    if not as_json:
        _notes(plan.notes)
    if dry_run or not plan.entries:
        if as_json:
            output.json(_report(across, plan, [0] * len(across.plans), dry_run))
        elif dry_run:
            _each(across, "would free", [p.bytes for p in across.plans])
            size = human_bytes(plan.bytes)
            output.print(f"would free {size} ({what}); nothing deleted (dry run)")
        else:
            output.print("nothing to delete")
        return
    models = f" of {len(across.plans)} models" if across.several else ""
    question = f"delete {what}{models} ({human_bytes(plan.bytes)})?"
    if not output.confirm(question, yes=yes, action="delete cache entries"):
        output.print("nothing deleted")
        raise typer.Exit(exit_codes.FAILURE)
    shown = [len(p.notes) for p in across.plans]
    freed = across.act()
    if as_json:
        output.json(_report(across, plan, freed, False))
        return
    _notes([n for p, seen in zip(across.plans, shown, strict=True) for n in p.notes[seen:]])
    _each(across, "freed", freed)
    total = sum(freed)
    output.print(f"freed {human_bytes(total)} ({total} bytes, {what})")


def _each(across, verb: str, sizes: list[int]) -> None:
    if across.several:
        for part, size in zip(across.plans, sizes, strict=True):
            output.print(f"{part.name}: {verb} {human_bytes(size)} ({len(part.entries)} entries)")


def _report(across, plan, freed: list[int], dry_run: bool) -> dict:
    """The JSON answer: today's shape, plus each model's part when there are several."""
    out = {**plan.to_dict(), "dry_run": dry_run, "freed_bytes": sum(freed)}
    if across.several:
        out["models"] = [
            {**part.to_dict(), "freed_bytes": size}
            for part, size in zip(across.plans, freed, strict=True)
        ]
    return out


@cache_app.command("clear")
def clear_command(
    ram: bool = typer.Option(False, "--ram", help="Only the RAM tier (needs a running worker)."),
    disk: bool = typer.Option(False, "--disk", help="Only the disk tier."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be freed; delete nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; required without a terminal."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete cache entries (both tiers unless --ram or --disk) and report the bytes freed."""
    from mlxctl import cache_admin
    from mlxctl.cache_across import Across

    tier = "ram" if ram and not disk else "disk" if disk and not ram else "both"
    plans = [cache_admin.plan_clear(tier, where) for where in _targets(model)]
    _run(Across(plans), dry_run, yes, as_json)


@cache_app.command("prune")
def prune_command(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age since last use: 7d, 12h, 1d12h, 90m, 30s."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be freed; delete nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; required without a terminal."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete disk entries not used for longer than --older-than; report the bytes freed."""
    from mlxctl import cache_admin
    from mlxctl.cache_across import Across

    age = parse_duration(older_than)
    _run(Across([cache_admin.plan_prune(age, w) for w in _targets(model)]), dry_run, yes, as_json)


@cache_app.command("why")
def why_command(
    request_id: str = typer.Argument(
        None, help="A request id from `mlxctl status` (a prefix will do); default: the last."
    ),
    last: bool = typer.Option(False, "--last", help="The newest request (the default)."),
    model: str = typer.Option(
        None, "--model", help="The served model that answered it; default: any that knows it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Why a recent request missed the cache: the prefix it found, and where its prompt left
    the nearest earlier one (system block N, the tools list, message N), with excerpts."""
    from mlxctl import cache_across
    from mlxctl.cli.cache_why_view import show_why

    report = cache_across.why_any(None if last else request_id, _targets(model))
    if as_json:
        output.json(report)
        return
    show_why(report)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
