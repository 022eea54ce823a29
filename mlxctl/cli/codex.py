"""`mlxctl codex [ARGS...]`: OpenAI's Codex CLI against the local worker, set up from what it
reports, with `-c` overrides that leave the user's own config.toml as it is."""

from __future__ import annotations

import os

import typer

from mlxctl import codex_env, config
from mlxctl.cli.agent_launch import ClientNotFound, serving
from mlxctl.cli.output import output
from mlxctl.system import processes


def codex(
    ctx: typer.Context,
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the overrides as TOML instead of running codex."
    ),
) -> None:
    """Run Codex against the local worker (started if needed); extra ARGS go to codex.

    Passes `-c` overrides: a custom provider for the worker (its address, the Responses API, its
    key), the served model's name, the context window, compaction before it is full, and a stream
    idle timeout from the measured prefill speed. A value you set in your Codex config.toml, its
    active profile or your own `-c` is kept (except the provider and model, which point Codex at
    the worker). Your config.toml, auth and history are not touched.
    """
    client = None if print_config else codex_env.find_client()
    if not print_config and client is None:
        raise ClientNotFound("`codex` (OpenAI Codex CLI) is not installed", codex_env.INSTALL_HINT)
    url, report = serving()
    api_key = config.load().get("api_key") or None
    user_config = codex_env.read_user_config(os.environ)
    args = list(ctx.args)
    overrides = codex_env.overrides_for(report, url, api_key, user_config, args)
    kept = codex_env.left_to_user(report, user_config, args)
    if print_config:
        for o in overrides:
            output.plain(f"{o.key} = {o.toml()}  # {o.why}")
        for key in kept:
            output.plain(f"# {key}: yours, from your Codex config")
        return
    assert client is not None  # only --print-config goes on without one
    output.err.print(f"running {client} against {url} with:", soft_wrap=True)
    for o in overrides:
        output.err.print(f"  -c [bold]{o.arg()}[/]  [dim]# {o.why}[/]", soft_wrap=True)
    for key in kept:
        output.err.print(f"  [bold]{key}[/]  [dim]# yours, from your Codex config[/]",
                         soft_wrap=True)  # fmt: skip
    env = codex_env.environment(api_key)
    raise typer.Exit(processes.run_client(codex_env.argv(client, overrides, args), env))


def register(app: typer.Typer) -> None:
    app.command(
        "codex", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(codex)
