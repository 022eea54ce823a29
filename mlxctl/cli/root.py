"""The `mlxctl` Typer app, assembled from one module per command group, inside the one error
boundary (`mlxctl.cli.boundary`) that turns every failure into one line, a hint and an exit code."""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup

from mlxctl.cli.boundary import exit_code_for
from mlxctl.cli.output import output


class _ErrorBoundary(TyperGroup):
    """The root group: every command runs inside its `invoke`, so CliRunner tests and the console
    script meet the same boundary."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # Typer's own control flow: exit codes and usage errors
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_code_for(exc)) from None


app = typer.Typer(
    name="mlxctl",
    cls=_ErrorBoundary,
    help="Run a local MLX model for coding agents: supervise the worker, its models and caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Run a local MLX model for coding agents: supervise the worker, its models and caches."""
    # A callback keeps `mlxctl` a command group even when only one command is registered; it also
    # runs once per invocation, so the consoles follow this invocation's NO_COLOR and COLUMNS.
    output.reset()


# Each module exposes `register(app)`. Commands map to their module so one invocation imports
# only what it runs (`mlxctl status` must answer fast); `--help` and unknown names load all.
COMMAND_MODULES = {
    "model": "mlxctl.cli.model",
    "start": "mlxctl.cli.lifecycle",
    "stop": "mlxctl.cli.lifecycle",
    "restart": "mlxctl.cli.lifecycle",
    "status": "mlxctl.cli.lifecycle",
    "reset-failed": "mlxctl.cli.lifecycle",
    "logs": "mlxctl.cli.logs",
    "config": "mlxctl.cli.config",
    "doctor": "mlxctl.cli.doctor",
    "cache": "mlxctl.cli.cache",
    "trace": "mlxctl.cli.trace",
    "bench": "mlxctl.cli.bench",
    "claude": "mlxctl.cli.claude",
    "codex": "mlxctl.cli.codex",
    "release": "mlxctl.cli.release",
    "migrate": "mlxctl.cli.release",
    "rollback": "mlxctl.cli.release",
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
