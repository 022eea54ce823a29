"""`mlxctl start | stop | restart | status`: thin commands over `mlxctl.lifecycle` and `.status`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from functools import partial

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from mlxctl import lifecycle
from mlxctl.console import err, out
from mlxctl.errors import StartFailedError
from mlxctl.format import human_bytes, human_duration
from mlxctl.status import status as current_status


def _print_started(outcome: lifecycle.StartOutcome) -> None:
    st = outcome.status.to_dict()
    if outcome.already_running:
        out.print(f"[yellow]already running[/] at {st['url']}")
    else:
        out.print(f"[green]started[/] {st['url']}")
    for note in outcome.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"  model       {st['model']}")
    out.print(f"  supervisor  pid {st['supervisor_pid']}")
    out.print(f"  worker      pid {st['worker_pid']}")
    out.print("\nPoint your clients at it:")
    out.print(f"  export ANTHROPIC_BASE_URL={st['url']}", soft_wrap=True)
    out.print(f"  export OPENAI_BASE_URL={st['url']}/v1", soft_wrap=True)


# The worker's log lines start with a timestamp; the spinner already shows the elapsed time.
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.,]+\s+")


class _SpinnerPull:
    """Shows the demo model's pull stages in the start spinner."""

    def __init__(self, spinner):
        self.spinner = spinner
        self.name = ""
        self.total: int | None = None

    def stage(self, name: str, total: int | None = None) -> None:
        self.name, self.total = name, total
        self.spinner.update(f"pulling the demo model: {name}")

    def advance(self, done: int) -> None:
        of = f" of {human_bytes(self.total)}" if self.total else ""
        self.spinner.update(f"pulling the demo model: {self.name} {human_bytes(done)}{of}")


def _run_start(begin: Callable[..., lifecycle.StartOutcome]) -> None:
    began = time.monotonic()
    with err.status("starting the worker") as spinner:

        def on_wait(elapsed: float, line: str) -> None:
            line = escape(_TIMESTAMP.sub("", line))
            line = line if len(line) <= 90 else line[:89] + "…"
            spinner.update(f"starting the worker [dim]{elapsed:4.0f}s[/]  [dim]{line}[/]")

        try:
            outcome = begin(on_wait=on_wait, pull_progress=_SpinnerPull(spinner))
        except KeyboardInterrupt:
            spinner.stop()
            err.print("interrupted: the supervisor keeps starting in the background")
            err.print("[dim]hint:[/] `mlxctl status` to watch it, `mlxctl stop` to stop it")
            raise typer.Exit(130) from None
        except StartFailedError as exc:
            spinner.stop()
            if exc.worker_exit_code is not None:
                err.print(f"worker exit code: {exc.worker_exit_code}")
            if exc.log_tail:
                err.print("last lines of the worker log:")
                for line in exc.log_tail:
                    err.print(f"  {line}", markup=False, highlight=False)
            raise
    if not outcome.already_running:
        out.print(f"[dim]healthy after {time.monotonic() - began:.1f}s[/]")
    _print_started(outcome)


def start(
    model: str = typer.Option(
        None, "--model", "-m", help="Model to serve (installed name, MLX dir or HF id)."
    ),
    port: int = typer.Option(None, "--port", "-p", help="Port to listen on (default: config)."),
    foreground: bool = typer.Option(
        False, "--foreground", help="Run the supervisor here; Ctrl-C stops it cleanly."
    ),
) -> None:
    """Start the supervisor and its worker; returns once the worker answers /health.

    With no model configured it serves the demo model, pulling it first if needed.
    Already running: says so and exits 0.
    """
    if foreground:
        raise typer.Exit(lifecycle.run_foreground(model, port))
    _run_start(partial(lifecycle.start, model, port))


def stop(
    timeout: float = typer.Option(
        None, "--timeout", "-t", help="Seconds between SIGTERM and SIGKILL (default: config)."
    ),
) -> None:
    """Stop the worker (SIGTERM to its group, grace period, SIGKILL) and the supervisor."""
    outcome = lifecycle.stop(timeout)
    if not outcome.was_running:
        out.print("not running")
        return
    forced = " (forced with SIGKILL)" if outcome.forced else ""
    out.print(
        f"stopped{forced}: supervisor pid {outcome.supervisor_pid or '-'}, "
        f"worker pid {outcome.worker_pid or '-'}"
    )


def restart(
    model: str = typer.Option(None, "--model", "-m", help="Model to serve after the restart."),
    port: int = typer.Option(None, "--port", "-p", help="Port to listen on after the restart."),
    timeout: float = typer.Option(None, "--timeout", "-t", help="Stop grace period in seconds."),
) -> None:
    """Stop, then start again (same model and port unless given)."""
    _run_start(partial(lifecycle.restart, model, port, timeout))


def _table(st: dict) -> Table:
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


def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between --watch refreshes."),
) -> None:
    """Show the supervisor and worker state. Exit code: 0 running, 3 not running, 4 unknown."""
    report = current_status()
    st, code = report.to_dict(), report.exit_code
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
        raise typer.Exit(code)
    if not watch:
        out.print(_table(st))
        raise typer.Exit(code)
    try:
        with Live(_table(st), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                st = current_status().to_dict()
                live.update(_table(st), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("start")(start)
    app.command("stop")(stop)
    app.command("restart")(restart)
    app.command("status")(status)
