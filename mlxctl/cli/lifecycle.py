"""`mlxctl start | stop | restart | status | reset-failed`: thin commands over the core."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial

import typer
from rich.markup import escape

from mlxctl import exit_codes, lifecycle
from mlxctl.cli.output import output
from mlxctl.cli.status_view import show_status, watch_status
from mlxctl.errors import StartFailedError
from mlxctl.status import status as current_status
from mlxctl.stop import stop as stop_service
from mlxctl.units import human_bytes


def _print_started(outcome: lifecycle.StartOutcome) -> None:
    st = outcome.status.to_dict()
    if outcome.already_running:
        output.print(f"[yellow]already running[/] at {st['url']}")
    else:
        output.success(f"started {st['url']}")
    for note in outcome.notes:
        output.note(note)
    output.print(f"  model       {st['model']}")
    output.print(f"  supervisor  pid {st['supervisor_pid']}")
    output.print(f"  worker      pid {st['worker_pid']}")
    output.print("\nPoint your clients at it:")
    output.print(f"  export ANTHROPIC_BASE_URL={st['url']}", soft_wrap=True)
    output.print(f"  export OPENAI_BASE_URL={st['url']}/v1", soft_wrap=True)


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


def _run_start(begin: Callable[..., lifecycle.StartOutcome], report: bool = True) -> None:
    """Start with the spinner (health-gated); `report` prints what started and where."""
    began = time.monotonic()
    with output.err.status("starting the worker") as spinner:

        def on_wait(elapsed: float, line: str) -> None:
            line = escape(_TIMESTAMP.sub("", line))
            line = line if len(line) <= 90 else line[:89] + "…"
            spinner.update(f"starting the worker [dim]{elapsed:4.0f}s[/]  [dim]{line}[/]")

        try:
            outcome = begin(on_wait=on_wait, pull_progress=_SpinnerPull(spinner))
        except KeyboardInterrupt:
            spinner.stop()
            output.err.print("interrupted: the supervisor keeps starting in the background")
            output.hint("`mlxctl status` to watch it, `mlxctl stop` to stop it")
            raise typer.Exit(exit_codes.INTERRUPTED) from None
        except StartFailedError as exc:
            spinner.stop()
            if exc.worker_exit_code is not None:
                output.err.print(f"worker exit code: {exc.worker_exit_code}")
            if exc.log_tail:
                output.err.print("last lines of the worker log:")
                for line in exc.log_tail:
                    output.err.print(f"  {line}", markup=False)
            raise
    if not report:
        if not outcome.already_running:
            output.err.print(f"[dim]started {outcome.status.url}, healthy after "
                             f"{time.monotonic() - began:.1f}s[/]")  # fmt: skip
        return
    if not outcome.already_running:
        output.print(f"[dim]healthy after {time.monotonic() - began:.1f}s[/]")
    _print_started(outcome)


def start(
    model: str = typer.Option(
        None, "--model", "-m", help="Model to serve (installed name, MLX dir or HF id)."
    ),
    port: int = typer.Option(None, "--port", "-p", help="Port to listen on (default: config)."),
    foreground: bool = typer.Option(
        False, "--foreground", help="Run the supervisor here; Ctrl-C stops it cleanly."
    ),
    ranks: int = typer.Option(
        None, "--ranks", min=1, help="Ranks on this machine under mlx.launch (config)."
    ),
    hosts: str = typer.Option(
        None, "--hosts", help="One rank per host, comma-separated IPs; the first is this one."
    ),
    hostfile: str = typer.Option(
        None, "--hostfile", help="An mlx.launch hostfile (mlx.distributed_config writes one)."
    ),
    backend: str = typer.Option(None, "--backend", help="ring, jaccl, mpi or nccl (ring)."),
    parallel: str = typer.Option(
        None, "--parallel", help="Split the model by tensor or pipeline (tensor)."
    ),
) -> None:
    """Start the supervisor and its worker; returns once the worker answers /health.

    With no model configured it serves the demo model, pulling it first if needed.
    Already running: says so and exits 0. --ranks/--hosts/--hostfile run one model across
    several processes or machines (mlx.distributed); rank 0 serves HTTP here.
    """
    overrides = {
        "distributed.ranks": ranks,
        "distributed.hosts": hosts,
        "distributed.hostfile": hostfile,
        "distributed.backend": backend,
        "distributed.parallel": parallel,
    }
    if foreground:
        raise typer.Exit(lifecycle.run_foreground(model, port, overrides))
    _run_start(partial(lifecycle.start, model, port, overrides=overrides))


def stop(
    timeout: float = typer.Option(
        None, "--timeout", "-t", help="Seconds between SIGTERM and SIGKILL (default: config)."
    ),
) -> None:
    """Stop the worker (SIGTERM to its group, grace period, SIGKILL) and the supervisor."""
    outcome = stop_service(timeout)
    for note in outcome.notes:
        output.note(note)
    if not outcome.was_running:
        output.print("not running")
        return
    forced = " (forced with SIGKILL)" if outcome.forced else ""
    output.print(
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


def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between --watch refreshes."),
) -> None:
    """Show the service, memory, prefix cache and last requests. Exit code: 0 running, 3 not
    running, 4 unknown. --watch redraws in place; q or Ctrl-C ends it."""
    if as_json or not watch:
        raise typer.Exit(show_status(as_json))
    # `q` ends the watch with the status's code; Ctrl-C meets the error boundary (INTERRUPTED).
    watch_status(interval)
    raise typer.Exit(current_status(probe=False).exit_code)


def reset_failed() -> None:
    """Allow starts again after repeated FATAL ones (`restart.start_limit`); clears FATAL."""
    outcome = lifecycle.reset_failed()
    if not outcome["failed_starts"] and not outcome["was_fatal"]:
        output.print("nothing to reset")
        return
    output.print(
        f"reset: {outcome['failed_starts']} failed starts forgotten"
        + ("; FATAL cleared" if outcome["was_fatal"] else "")
    )


def register(app: typer.Typer) -> None:
    app.command("reset-failed")(reset_failed)
    app.command("start")(start)
    app.command("stop")(stop)
    app.command("restart")(restart)
    app.command("status")(status)
