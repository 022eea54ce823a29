"""`mlxctl status` as people read it: grouped Rich panels from the core's status dict (no Typer).

Panels: service and memory side by side, then the prefix cache per tier and the last requests.
Every value goes through a formatter that prints `-` for a missing one, never `None`.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mlxctl.cli.output import output
from mlxctl.status import status
from mlxctl.units import human_bytes, human_duration

WIDTH = 100
BAR_WIDTH = 10


def _panel(body: Any, title: str, subtitle: str | None = None) -> Panel:
    """A titled panel; titles as plain Text, since a markup string makes Rich load its 40 ms
    emoji table on every `mlxctl status`."""
    return Panel(
        body,
        title=Text(title),
        subtitle=Text(subtitle) if subtitle else None,
        title_align="left",
    )


def show_status(as_json: bool) -> int:
    """Print the status once (the panels, or JSON for scripts); return its exit code."""
    # The exit code is one of exit_codes.OK / NOT_RUNNING / UNKNOWN.
    report = status()
    if as_json:
        output.json(report.to_dict())
    else:
        output.print(status_table(report.to_dict()), width=min(output.out.width, WIDTH))
    return report.exit_code


def watch_status(interval: float) -> None:
    """Redraw the panels in place every `interval` seconds until `q` or Ctrl-C."""
    from rich.live import Live

    from mlxctl.cli.keys import keys_unbuffered, quit_pressed

    width = min(output.out.width, WIDTH)
    with (
        keys_unbuffered(),
        Live(
            _sized(status_table(status().to_dict()), width), console=output.out, auto_refresh=False
        ) as live,
    ):
        while not quit_pressed(interval):
            live.update(_sized(status_table(status().to_dict()), width), refresh=True)


def _sized(view, width: int):
    from rich.constrain import Constrain

    return Constrain(view, width)


# -- formatting -------------------------------------------------------------------------------


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _pct(part, whole) -> str:
    if not isinstance(part, int | float) or not isinstance(whole, int | float) or whole <= 0:
        return "-"
    share = 100 * part / whole
    # 99.7% is not 100%: only a whole hit prints as one.
    return "100%" if part >= whole else f"{min(share, 99):.0f}%"


def _rate(value) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, int | float) else "-"


def _seconds(value) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if value < 120 else human_duration(value)


def _bar(used, budget) -> str:
    """`██████░░░░ 5.0 GiB / 8.0 GiB` for a byte budget."""
    if not isinstance(used, int | float) or not isinstance(budget, int | float) or budget <= 0:
        return human_bytes(used) if isinstance(used, int | float) else "-"
    filled = min(BAR_WIDTH, round(BAR_WIDTH * used / budget))
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    return f"{bar} {human_bytes(used)} / {human_bytes(budget)}"


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    return grid


# -- the panels -------------------------------------------------------------------------------


def _service(st: dict) -> Panel:
    grid = _grid()
    colour = {"RUNNING": "green", "FATAL": "red", "UNKNOWN": "red"}.get(st["state"], "yellow")
    health = f"  health {st['health']}" if st.get("health") else ""
    grid.add_row("state", f"[{colour}]{st['state']}[/]{health}")
    if st.get("detail"):
        grid.add_row("", st["detail"])
    if st.get("fatal_reason"):
        grid.add_row("reason", st["fatal_reason"])
    grid.add_row("model", st.get("model") or "-")
    grid.add_row("release", st.get("release") or "-")
    grid.add_row("front door", st.get("url") or "-")  # the service's address
    if st.get("worker_port"):
        grid.add_row("worker port", f"{st['worker_port']} (private)")
    grid.add_row("uptime", human_duration(st.get("uptime_seconds")))
    grid.add_row("restarts", str(st.get("restarts") or 0))
    last = st.get("last_exit")
    if last and last.get("reason"):
        grid.add_row("last exit", last["reason"])
    grid.add_row(
        "pids",
        f"supervisor {st.get('supervisor_pid') or '-'}, worker {st.get('worker_pid') or '-'}",
    )
    if st.get("context_length"):
        backend = f", {st['backend']} backend" if st.get("backend") else ""
        grid.add_row("context", f"{_count(st['context_length'])} tokens{backend}")
    if isinstance(st.get("images"), bool):
        grid.add_row("input", "text and images" if st["images"] else "text")
    if isinstance(st.get("scheduler"), dict):
        for label, value in _scheduler(st["scheduler"]):
            grid.add_row(label, value)
    return _panel(grid, "service")


def _scheduler(s: dict) -> list[tuple[str, str]]:
    """Rows for the worker's batch: running and decoding, waiting and tok/s, and its mode
    when it is not batching (and why)."""
    batch = f"{_count(s.get('running'))} running, {_count(s.get('batch_size'))} decoding"
    rows = [("batch", batch)]
    queue = f"{_count(s.get('waiting'))} waiting"
    if isinstance(s.get("tokens_per_second"), int | float):
        queue += f", {s['tokens_per_second']:,.1f} tok/s"
    rows.append(("queue", queue))
    if s.get("mode") and s["mode"] != "batched":
        rows.append(("mode", s["mode"] + (f": {s['reason']}" if s.get("reason") else "")))
    if isinstance(s.get("speculative"), dict):
        rows += _drafting(s["speculative"])
    return rows


def _drafting(d: dict) -> list[tuple[str, str]]:
    """Speculative decoding: the mode (draft model, MTP head) and drafts accepted; tokens per
    verify, the last request's."""
    drafted, accepted = d.get("drafted") or 0, d.get("accepted") or 0
    mode = str(d.get("mode") or "-")
    model = str(d.get("draft_model") or "").rstrip("/").rsplit("/", 1)[-1]  # a path's last part
    kept = d.get("draft_caches") or {}
    if model and kept:  # a conversation's next turn starts from its draft cache
        model += f" (caches {_count(kept.get('entries'))} kept, {_count(kept.get('hits'))} hits)"
    named = [("draft model", model)] if model else []
    named += [("MTP head", "loaded")] if d.get("mtp") else []
    if not drafted:
        return [("drafting", mode), *named]
    rows = [("drafting", f"{mode}, {accepted / drafted:.0%} of {_count(drafted)} accepted")]
    rows += named
    verify = f"{d.get('tokens_per_step') or 0:.1f} tokens/step"
    recent = d.get("recent") or []
    if recent and isinstance(recent[-1], dict):
        last = recent[-1]
        verify += f"; last {last.get('source', '-')} {last.get('tokens_per_step') or 0:.1f}"
    return [*rows, ("verify", verify)]


def _memory(st: dict) -> Panel:
    grid = _grid()
    grid.add_row("worker RSS", human_bytes(st.get("worker_rss_bytes")))
    mem = st.get("memory") or {}
    if mem:
        grid.add_row(
            "MLX",
            f"active {human_bytes(mem.get('active_bytes'))}, "
            f"peak {human_bytes(mem.get('peak_bytes'))}",
        )
        grid.add_row("MLX cache", human_bytes(mem.get("cache_bytes")))
    limits = st.get("memory_limits")
    if limits:
        grid.add_row(
            "limits",
            f"soft {human_bytes(limits['soft_bytes'])} (sheds the RAM cache), "
            f"hard {human_bytes(limits['hard_bytes'])} (restart)",
        )
    sysmem = st.get("system_memory") or {}
    total = sysmem.get("total_bytes")
    available = sysmem.get("available_bytes")
    if available is None and total is not None and sysmem.get("used_bytes") is not None:
        available = total - sysmem["used_bytes"]
    grid.add_row("system", f"{human_bytes(available)} available of {human_bytes(total)}")
    cache = st.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    for tier in ("ram", "disk"):
        info = cache.get(tier)
        if isinstance(info, dict):
            grid.add_row(f"{tier} cache", _bar(info.get("bytes"), info.get("budget_bytes")))
    return _panel(grid, "memory")


def _cache(cache: dict) -> Panel:
    table = Table(box=None, pad_edge=False, expand=True)
    # Short headers: the table must fit an 80-column terminal too ("reused": prompt tokens).
    for name in ("tier", "entries", "used / budget", "hit rate", "reused", "written"):
        table.add_column(name, justify="left" if name == "tier" else "right", no_wrap=True)
    table.add_column("prefill saved", justify="right", no_wrap=True)
    lookups = (cache.get("hits") or 0) + (cache.get("misses") or 0)
    for tier in ("ram", "disk"):
        info = cache.get(tier)
        if not isinstance(info, dict):
            continue
        used = f"{human_bytes(info.get('bytes'))} / {human_bytes(info.get('budget_bytes'))}"
        written = human_bytes(info["bytes_written"]) if "bytes_written" in info else "-"
        hits = _pct(cache.get(f"{tier}_hits"), lookups)
        table.add_row(tier, _count(info.get("entries")), used, hits, "-", written, "-")
    table.add_row(
        "all",
        "",
        "",
        _rate(cache.get("hit_rate")) if lookups else "-",
        _rate(cache.get("token_reuse_rate")) if cache.get("lookup_tokens") else "-",
        "",
        _seconds(cache.get("prefill_seconds_saved")),
        style="bold",
    )
    speed = cache.get("prefill_tokens_per_second")
    note = (
        f"  {lookups:,} lookups, prefill {speed:,.0f} tok/s" if speed else f"  {lookups:,} lookups"
    )
    body = table if (failing := _disk_failing(cache)) is None else Group(table, failing)
    return _panel(body, "prefix cache", subtitle=note)


def _disk_failing(cache: dict) -> Text | None:
    """The disk tier's outage, when it has one: the worker serves from RAM meanwhile."""
    disk = cache.get("disk")
    error = disk.get("error") if isinstance(disk, dict) else None
    if not isinstance(error, dict):
        return None
    since = error.get("since")
    when = time.strftime("%H:%M:%S", time.localtime(since)) if since else "-"
    retry = error.get("retry_in_s")
    again = f"; next try in {retry:.0f}s" if isinstance(retry, int | float) else ""
    return Text(
        f"disk failing since {when}, RAM only{again}: {error.get('reason') or '-'}", style="red"
    )


def _recent(rows: list[dict]) -> Panel:
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("id", no_wrap=True, style="dim")
    table.add_column("time", no_wrap=True)
    table.add_column("protocol", no_wrap=True)
    for name in ("prompt", "cached", "TTFT", "tok/s"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("finish", no_wrap=True)
    for row in rows:
        at = row.get("time")
        ttft = row.get("ttft_ms")
        tps = row.get("tokens_per_second")
        table.add_row(
            str(row.get("id") or "-"),
            time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "-",
            str(row.get("protocol") or "-"),
            _count(row.get("prompt_tokens")),
            _pct(row.get("cached_tokens"), row.get("prompt_tokens")),
            _seconds(ttft / 1000) if isinstance(ttft, int | float) else "-",
            f"{tps:.1f}" if isinstance(tps, int | float) else "-",
            str(row.get("finish") or "-"),
        )
    return _panel(table, "last requests")


def _ranks(rows: list[dict], cache: dict | None) -> Panel:
    """One line per rank: where it runs, its pid and memory, and its own prefix-cache hits."""
    hits = {r.get("rank"): r for r in (cache or {}).get("ranks") or [] if isinstance(r, dict)}
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("host", no_wrap=True)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("RSS", justify="right", no_wrap=True)
    table.add_column("cache hits", justify="right", no_wrap=True)
    for row in rows:
        rss = row.get("rss_bytes")
        own = hits.get(row.get("rank")) or {}
        table.add_row(
            _count(row.get("rank")),
            str(row.get("host") or "-"),
            str(row.get("pid") or "-"),
            human_bytes(rss) if isinstance(rss, int) else "-",
            f"{own['hits']}/{own['lookups']}" if "hits" in own and "lookups" in own else "-",
        )
    return _panel(table, f"ranks ({len(rows)})")


def _models(rows: list[dict]) -> Panel:
    """One line per served model ([models.NAME] entries beside the default)."""
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("model", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name in ("memory", "cache", "requests"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("aliases", overflow="fold")
    colours = {"running": "green", "fatal": "red", "starting": "yellow"}
    for row in rows:
        state = str(row.get("state") or "-")
        name = str(row.get("name") or "-") + (" (default)" if row.get("default") else "")
        rss, cache = row.get("rss_bytes"), row.get("cache_bytes")
        table.add_row(
            Text(name),
            Text(state, style=colours.get(state, "dim")),
            human_bytes(rss) if isinstance(rss, int) else "-",
            human_bytes(cache) if isinstance(cache, int) else "-",
            _count(row.get("requests")),
            Text(", ".join(row.get("aliases") or []) or "-"),
        )
    return _panel(table, f"models ({len(rows)})")


def status_table(st: dict) -> Group:
    """The `mlxctl status` view of the core's status dict (fits 100 columns)."""
    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=1)
    top.add_column(ratio=1)
    top.add_row(_service(st), _memory(st))
    parts: list = [top]
    if len(st.get("models") or []) > 1:
        parts.append(_models(st["models"]))
    if st.get("ranks"):
        parts.append(_ranks(st["ranks"], st.get("cache")))
    if isinstance(st.get("cache"), dict):
        parts.append(_cache(st["cache"]))
    if st.get("recent"):
        parts.append(_recent(st["recent"]))
    if st.get("log_tail"):
        lines = Text("\n".join(st["log_tail"]), no_wrap=False)  # the log's text, not markup
        parts.append(_panel(lines, "last lines of the worker log"))
    return Group(*parts)
