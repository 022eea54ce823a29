"""The one place mlxctl writes to the terminal: Rich consoles for output and for errors."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, hint: str | None = None) -> None:
    """Print an error as one line plus an optional hint, on stderr."""
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"[dim]hint:[/] {hint}")
