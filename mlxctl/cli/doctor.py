"""`mlxctl doctor`: preflight checks as a pass/warn/fail table."""

from __future__ import annotations

import typer

from mlxctl import exit_codes
from mlxctl.cli.output import output

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def doctor(
    model: str = typer.Option(None, "--model", "-m", help="Check this model instead of config's."),
    port: int = typer.Option(None, "--port", "-p", help="Check this port instead of config's."),
    hostfile: str = typer.Option(
        None, "--hostfile", help="Check this mlx hostfile instead of config's distributed.*."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check Python, mlx and its backend, OpenBLAS, disk, model, port and RAM; across machines
    also the hostfile and, on each host over SSH, mlx/mlx-lm versions and the model files.
    Exit 1 on a fail."""
    from mlxctl.doctor import FAIL, run_checks

    with output.err.status("checking"):
        checks = run_checks(model, port, hostfile)
    if as_json:
        output.json([c.__dict__ for c in checks])
    else:
        rows = [(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail) for c in checks]
        output.table("check", "result", "detail", rows=rows)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(exit_codes.FAILURE)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
