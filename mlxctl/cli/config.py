"""`mlxctl config show | get | set | edit | path`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import typer

from mlxctl.cli.output import output
from mlxctl.errors import ConfigError

config_app = typer.Typer(
    help="Show and change the config file (comments and order survive `set`).",
    no_args_is_help=True,
)


@config_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Effective values as JSON.")) -> None:
    """Print every key's effective value (the file's, or the default)."""
    from mlxctl import config  # tomlkit only for config commands: keeps `status` fast

    values = config.load()
    models = {name: entry.to_dict() for name, entry in values.pop("models").items()}
    if as_json:
        output.json({**values, "models": models})
        return
    for key in config.SCHEMA:
        value = values[key.path]
        shown = "***" if key.path == "api_key" and value else json.dumps(value)
        marker = "" if value != key.default else "  [dim](default)[/]"
        output.print(f"{key.path} = {shown}{marker}")
    for name, entry in models.items():  # [models.NAME]: served by name beside `model`
        for field, value in entry.items():
            output.print(f"models.{name}.{field} = {json.dumps(value)}", markup=False)


@config_app.command("get")
def get(key: str = typer.Argument(..., help="Key path, e.g. port or restart.backoff_max.")) -> None:
    """Print one key's effective value."""
    from mlxctl import config

    value = config.get(key)
    output.plain(value if isinstance(value, str) else json.dumps(value))


@config_app.command("set")
def set_(
    key: str = typer.Argument(..., help="Key path, e.g. port or restart.backoff_max."),
    value: str = typer.Argument(..., help="New value; checked against the key's type."),
) -> None:
    """Set one key in the config file, keeping its comments and order."""
    from mlxctl import config

    new = config.set_value(key, value)
    output.print(f"{key} = {json.dumps(new)}")


@config_app.command("edit")
def edit() -> None:
    """Open the config file in $VISUAL / $EDITOR, then check it."""
    from mlxctl import config

    path = config.ensure_file()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    subprocess.run([*shlex.split(editor), str(path)], check=False)
    try:
        config.load()
    except ConfigError as exc:
        exc.hint = f"the file was saved as is; fix it with `mlxctl config edit` ({exc.hint})"
        raise
    output.success(f"ok {path}")


@config_app.command("path")
def path() -> None:
    """Print where the config file lives (it may not exist yet)."""
    from mlxctl import config

    output.plain(str(config.config_path()))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
