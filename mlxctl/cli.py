"""The `mlxctl` command: a Typer app assembled from one module per command group."""

from __future__ import annotations

import importlib

import typer

from mlxctl.console import fail
from mlxctl.errors import MlxctlError

app = typer.Typer(
    name="mlxctl",
    help="Run a local MLX model for coding agents: supervise the worker, its models and caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app)`; kept as names so `mlxctl --help` imports no mlx.
COMMAND_MODULES = [
    "mlxctl.commands.model",
    "mlxctl.commands.service",
    "mlxctl.commands.logs",
    "mlxctl.commands.config",
    "mlxctl.commands.doctor",
    "mlxctl.commands.cache",
    "mlxctl.commands.bench",
    "mlxctl.commands.release",
]

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    try:
        app()
    except MlxctlError as exc:
        fail(str(exc), exc.hint)
        raise SystemExit(exc.exit_code) from None
