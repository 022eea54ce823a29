"""`mlxctl claude [ARGS...]`: Claude Code against the local worker, set up from what it reports."""

from __future__ import annotations

import os

import typer

from mlxctl import claude_env, config
from mlxctl.cli.agent_launch import ClientNotFound, serving
from mlxctl.cli.output import output
from mlxctl.models.served import Catalog
from mlxctl.system import processes


def claude(
    ctx: typer.Context,
    print_env: bool = typer.Option(
        False, "--print-env", help="Print `export` lines for a shell instead of running claude."
    ),
) -> None:
    """Run Claude Code against the local worker (started if needed); extra ARGS go to claude.

    Sets the base URL, token, model aliases, compaction window, timeouts from the measured
    prefill speed, tool and subagent concurrency, and turns non-essential traffic and
    attribution off. A value you already set in your environment is kept (except the address,
    token and model names, which point Claude Code at the worker).
    """
    client = None if print_env else claude_env.find_client()
    if not print_env and client is None:
        raise ClientNotFound("`claude` (Claude Code) is not installed", claude_env.INSTALL_HINT)
    url, report = serving()
    values = config.load()
    api_key = values.get("api_key") or None
    families = Catalog((), values["models"]).family_models()  # [models.NAME] aliases
    settings = claude_env.settings_for(report, url, api_key, user=os.environ, families=families)
    if print_env:
        for line in claude_env.export_lines(settings):
            output.plain(line)
        return
    assert client is not None  # only --print-env goes on without one
    output.err.print(f"running {client} against {url} with:", soft_wrap=True)
    for s in settings:
        output.err.print(f"  [bold]{s.name}[/]={s.value}  [dim]# {s.why}[/]", soft_wrap=True)
    env = claude_env.environment(settings)
    raise typer.Exit(processes.run_client([client, *ctx.args], env))


def register(app: typer.Typer) -> None:
    app.command(
        "claude", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(claude)
