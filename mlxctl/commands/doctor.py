"""`mlxctl doctor`: preflight checks as a pass/warn/fail table."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from mlxctl.console import out

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def doctor(
    model: str = typer.Option(None, "--model", "-m", help="Check this model instead of config's."),
    port: int = typer.Option(None, "--port", "-p", help="Check this port instead of config's."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check Python, mlx and its backend, OpenBLAS, disk, model, port and RAM. Exit 1 on a fail."""
    from mlxctl.doctor import FAIL, run_checks

    with out.status("checking"):
        checks = run_checks(model, port)
    if as_json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table("check", "result", "detail")
        for check in checks:
            table.add_row(check.name, f"[{_STYLE[check.status]}]{check.status}[/]", check.detail)
        out.print(table)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
