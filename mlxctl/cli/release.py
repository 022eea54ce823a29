"""`mlxctl release ...`, `mlxctl migrate` and `mlxctl rollback`: server versions and switching."""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

import typer

from mlxctl import exit_codes
from mlxctl.cli.output import output
from mlxctl.errors import ReleaseError
from mlxctl.releases.record import COMMAND, FEATURES, Release, new_release_id
from mlxctl.releases.store import ReleaseStore

if TYPE_CHECKING:
    from mlxctl.releases.switch import StepResult

release_app = typer.Typer(
    help="Server versions: list, show, create and archive releases.", no_args_is_help=True
)


def _switching():
    """The switch core, imported on use: `release ls` needs none of its process machinery."""
    from mlxctl.releases import switch

    return switch


def _chosen_model(model: str | None) -> str:
    # Imported on use: it reads the config (tomlkit) and the state file.
    from mlxctl.releases.model_ref import recorded_model

    return recorded_model(model)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@release_app.command("ls")
def ls_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List releases; the current one is marked with '*'."""
    store = ReleaseStore()
    releases, current = store.list(), store.current_id()
    if as_json:
        output.json([{**r.to_dict(), "current": r.id == current} for r in releases])
        return
    if not releases:
        output.print("no releases yet; `mlxctl release archive` records the installed worker")
        return
    rows = [
        (
            "*" if r.id == current else "",
            r.id,
            r.kind,
            r.model,
            _when(r.created),
            r.describe(),
            r.note,
        )
        for r in releases
    ]
    output.table("", "id", "kind", "model", "created", "worker", "note", rows=rows)


@release_app.command("show")
def show_command(release_id: str = typer.Argument(None, help="Release id (default: current).")):
    """Show one release as JSON, with its place in the journal."""
    store = ReleaseStore()
    release = store.get(release_id or _switching().require_current(store))
    data = release.to_dict()
    data["current"] = release.id == store.current_id()
    data["folder"] = str(store.folder(release.id))
    data["switches"] = [e for e in store.journal() if release.id in (e.get("from"), e.get("to"))]
    output.json(data)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ReleaseError(f"bad --env {pair!r}", hint="use --env NAME=VALUE")
        env[key] = value
    return env


@release_app.command("create")
def create_command(
    command: str = typer.Option(
        None,
        "--command",
        help="External server command line with {model}, {host} and {port} placeholders.",
    ),
    from_current: bool = typer.Option(
        False, "--from-current", help="Copy the current release, changing what you pass."
    ),
    model: str = typer.Option(None, "--model", help="Model the release serves."),
    arg: list[str] = typer.Option([], "--arg", help="Extra worker argument (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for the worker (repeatable)."),
    health_path: str = typer.Option("/health", "--health-path", help="Health URL path."),
    features: str = typer.Option(
        "openai,stream", "--features", help=f"What a --command server offers: {','.join(FEATURES)}."
    ),
    note: str = typer.Option("", "--note", help="A note shown in `release ls`."),
) -> None:
    """Record a release: an external server command, or a variant of the current release."""
    store = ReleaseStore()
    if bool(command) == from_current:
        raise ReleaseError("give exactly one of --command and --from-current")
    if from_current:
        base = store.get(_switching().require_current(store))
        release = store.derive(
            base,
            model=model or base.model,
            args=arg or base.args,
            env={**base.env, **_parse_env(env)},
            note=note or base.note,
        )
    else:
        claimed = [f.strip() for f in features.split(",") if f.strip()]
        unknown = sorted(set(claimed) - set(FEATURES))
        if unknown:
            raise ReleaseError(f"unknown features {unknown}", hint=f"known: {', '.join(FEATURES)}")
        shlex.split(command)  # reject unbalanced quotes now, not at start
        release = Release(
            id=new_release_id(),
            kind=COMMAND,
            command=command,
            model=_chosen_model(model),
            args=arg,
            env=_parse_env(env),
            health_path=health_path,
            features=claimed,
            note=note,
        )
        store.create(release)
    output.print(f"created release [bold]{release.id}[/] ({release.kind})")


@release_app.command("archive")
def archive_command(
    model: str = typer.Option(None, "--model", help="Model (default: the configured one)."),
    note: str = typer.Option("", "--note", help="A note shown in `release ls`."),
    make_current: bool = typer.Option(
        None, "--current/--no-current", help="Point current at it (default: when none is set)."
    ),
) -> None:
    """Snapshot the installed worker as a builtin release, so an upgrade can be undone."""
    from mlxctl import config
    from mlxctl.releases.snapshot import archive_installed

    store = ReleaseStore()
    layout = config.distributed_options(config.load())  # ranks and hosts travel with it
    release = archive_installed(store, _chosen_model(model), note, layout)
    if make_current or (make_current is None and store.current_id() is None):
        store.set_current(release.id, "archive")
    output.print(
        f"archived the installed worker as [bold]{release.id}[/] "
        f"(server {release.versions['mlxctl']}, mlx-lm {release.versions['mlx-lm']})"
    )


def _print_step(step: StepResult) -> None:
    mark = "[green]ok[/]  " if step.ok else "[red]FAIL[/]"
    output.print(
        f"  {mark} {step.name:<22} {step.detail} [dim]({step.seconds:.1f}s)[/]", soft_wrap=True
    )


def _run_switch(store: ReleaseStore, target: str, action: str, dry_run: bool) -> None:
    release = store.get(target)
    output.print(
        f"[bold]{action}[/] {store.current_id() or '(none)'} -> {release.id}"
        f" ({release.kind}: {release.describe()})"
    )
    switching = _switching()
    for number, line in enumerate(switching.plan(store, release, action), 1):
        output.print(f"  {number}. {line}", soft_wrap=True)
    if dry_run:
        output.print("dry run: nothing changed")
        return
    outcome = switching.switch(store, release.id, action, report=_print_step)
    if outcome.ok:
        output.success(f"{action} complete: current is {release.id}")
        return
    restored = "restored and healthy" if outcome.restored else "could NOT be restored"
    output.print(
        f"[red]{action} failed[/] at step '{outcome.failed_step}'; "
        f"previous release {outcome.source or '(none)'} {restored}"
    )
    raise typer.Exit(exit_codes.FAILURE)


def migrate_command(
    to: str = typer.Option(..., "--to", help="Release id to move to."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
) -> None:
    """Switch to another release, health-gated; any failing step rolls back by itself."""
    store = ReleaseStore()
    store.get(to)
    if not dry_run:
        from mlxctl import config  # tomlkit: only for the commands that read the config

        baseline = _switching().ensure_baseline(store, config.load())
        if baseline is not None:
            output.print(f"recorded the installed worker as release [bold]{baseline.id}[/]")
    _run_switch(store, to, "migrate", dry_run)


def rollback_command(
    release_id: str = typer.Argument(None, help="Release id (default: the previous one)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
) -> None:
    """Go back to the previous release (or the one named), with the same health gates."""
    store = ReleaseStore()
    _switching().require_current(store)
    target = _switching().rollback_target(store, release_id)
    if target is None:
        output.print(f"nothing to roll back: current is {store.current_id()}")
        return
    _run_switch(store, target, "rollback", dry_run)


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
    app.command("migrate")(migrate_command)
    app.command("rollback")(rollback_command)
