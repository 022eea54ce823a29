"""`mlxctl status` as people read it: one table from the core's status dict (Rich, no Typer)."""

from __future__ import annotations

from rich.table import Table

from mlxctl.cli.output import output
from mlxctl.status import status
from mlxctl.units import human_bytes, human_duration


def show_status(as_json: bool) -> int:
    """Print the status once (a table, or JSON for scripts); return its exit code."""
    # The exit code is one of exit_codes.OK / NOT_RUNNING / UNKNOWN.
    report = status()
    if as_json:
        output.json(report.to_dict())
    else:
        output.print(status_table(report.to_dict()))
    return report.exit_code


def status_table(st: dict) -> Table:
    """The `mlxctl status` view of the core's status dict."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    colour = {"RUNNING": "green", "FATAL": "red", "UNKNOWN": "red"}.get(st["state"], "yellow")
    table.add_row("state", f"[{colour}]{st['state']}[/]")
    if st.get("detail"):
        table.add_row("", st["detail"])
    if st.get("fatal_reason"):
        table.add_row("reason", st["fatal_reason"])
    table.add_row("supervisor pid", str(st["supervisor_pid"] or "-"))
    table.add_row("worker pid", str(st["worker_pid"] or "-"))
    table.add_row("uptime", human_duration(st["uptime_seconds"]))
    table.add_row("restarts", str(st["restarts"]))
    last = st.get("last_exit")
    table.add_row("last exit", f"{last['reason']}" if last else "-")
    table.add_row("release", str(st["release"] or "-"))
    table.add_row("model", str(st["model"] or "-"))
    table.add_row("url", str(st["url"] or "-"))
    table.add_row("health", str(st["health"] or "-"))
    table.add_row("worker rss", human_bytes(st["worker_rss_bytes"]))
    mem = st.get("memory") or {}
    if mem:
        table.add_row(
            "mlx memory",
            f"active {human_bytes(mem.get('active_bytes'))}, "
            f"peak {human_bytes(mem.get('peak_bytes'))}",
        )
    limits = st.get("memory_limits")
    if limits:
        table.add_row(
            "memory limits",
            f"soft {human_bytes(limits['soft_bytes'])} (sheds the RAM cache), "
            f"hard {human_bytes(limits['hard_bytes'])} (restart)",
        )
    sysmem = st["system_memory"]
    table.add_row(
        "system ram",
        f"{human_bytes(sysmem['used_bytes'])} / {human_bytes(sysmem['total_bytes'])}",
    )
    if st.get("tokens_reused") is not None:
        rate = st.get("cache_hit_rate")
        shown = f"{rate:.0%} of prompt tokens" if rate is not None else "-"
        table.add_row("cache hits", f"{shown}, {st['tokens_reused']} tokens reused")
    cache = st.get("cache")
    if isinstance(cache, dict):
        for key, value in _flatten(cache):
            shown = human_bytes(value) if key.endswith("bytes") else value
            table.add_row(f"cache {key}", str(shown))
    return table


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """{'ram': {'entries': 3}} -> [('ram entries', 3)]: whatever shape the worker reports."""
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key.replace('_', ' ')}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name} ")
        else:
            rows.append((name, value))
    return rows
