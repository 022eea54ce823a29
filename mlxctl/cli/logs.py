"""`mlxctl logs`: print or follow the worker's (or the supervisor's) log."""

from __future__ import annotations

import typer

from mlxctl import exit_codes, paths
from mlxctl.cli.output import output
from mlxctl.logs import follow, tail


def logs(
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to print."),
    supervisor: bool = typer.Option(
        False, "--supervisor", help="The supervisor's log instead of the worker's."
    ),
) -> None:
    """Print the last lines of the worker's log; -f follows it across rotations (Ctrl-C ends)."""
    path = paths.supervisor_log() if supervisor else paths.worker_log()
    # Plain writes, not Rich markup: log lines are printed verbatim and must not be re-wrapped.
    try:
        for line in tail(path, lines):
            output.plain(line)
        if not follow_:
            if not path.exists():
                output.note(f"no log yet at {path}")
            return
        for line in follow(path):
            output.plain(line)
    except BrokenPipeError:  # `mlxctl logs | head`
        raise typer.Exit(exit_codes.OK) from None


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
