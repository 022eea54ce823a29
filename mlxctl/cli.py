"""The `mlxctl` command: a Typer app assembled from one module per command group."""

from __future__ import annotations

import importlib
import sys

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


@app.callback()
def root() -> None:
    """Run a local MLX model for coding agents: supervise the worker, its models and caches."""
    # A callback keeps `mlxctl` a command group even when only one command is registered.


# Each module exposes `register(app)`. Commands map to their module so one invocation imports
# only what it runs (`mlxctl status` must answer fast); `--help` and unknown names load all.
COMMAND_MODULES = {
    "model": "mlxctl.commands.model",
    "start": "mlxctl.commands.service",
    "stop": "mlxctl.commands.service",
    "restart": "mlxctl.commands.service",
    "status": "mlxctl.commands.service",
    "logs": "mlxctl.commands.logs",
    "config": "mlxctl.commands.config",
    "doctor": "mlxctl.commands.doctor",
    "cache": "mlxctl.commands.cache",
    "bench": "mlxctl.commands.bench",
    "release": "mlxctl.commands.release",
    "migrate": "mlxctl.commands.release",
    "rollback": "mlxctl.commands.release",
}


_registered: set[str] = set()


def register_commands(argv: list[str] | None = None) -> typer.Typer:
    """Register the module of `argv`'s command (all of them when unknown or empty)."""
    wanted = COMMAND_MODULES.get(argv[0]) if argv else None
    modules = [wanted] if wanted else list(dict.fromkeys(COMMAND_MODULES.values()))
    for module_name in modules:
        if module_name not in _registered:
            _registered.add(module_name)
            importlib.import_module(module_name).register(app)
    return app


def main() -> None:
    register_commands(sys.argv[1:])
    try:
        app()
    except MlxctlError as exc:
        fail(str(exc), exc.hint)
        raise SystemExit(exc.exit_code) from None
