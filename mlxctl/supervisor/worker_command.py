"""The command a supervisor runs a worker with: the current release's, the configured worker's,
or `$MLXCTL_WORKER_COMMAND` (tests, custom servers), always on a private loopback port."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from mlxctl import config, paths
from server.edge import contract

WORKER_COMMAND_ENV = "MLXCTL_WORKER_COMMAND"  # override the worker command (tests, custom servers)
WORKER_HOST = "127.0.0.1"  # workers listen on loopback only: the front door is the way in


def override_argv(template: str, model: str, host: str, port: int) -> list[str]:
    """`$MLXCTL_WORKER_COMMAND` with its {python}, {model}, {host} and {port} filled in."""
    fields = {"python": sys.executable, "model": model, "host": host, "port": port}
    return [part.format(**fields) for part in shlex.split(template)]


def worker_command(
    args: argparse.Namespace,
    settings: dict[str, Any],
    port: int,
    log_file: Path | None = None,
    cache_dir: Path | None = None,
) -> tuple[list[str], str, dict[str, str]]:
    """The worker's argv, health path and extra environment: the current release's if set.
    A `[models.NAME]` worker gets a log file and cache folder of its own."""
    template = os.environ.get(WORKER_COMMAND_ENV)
    if template:
        argv = override_argv(template, args.model, WORKER_HOST, port)
        return argv, contract.HEALTH_PATH, {}
    options = {
        **config.worker_options(settings),
        "log_file": log_file or paths.worker_log(),
        "log_max_bytes": settings["logs.max_bytes"],
        "log_backups": settings["logs.backups"],
        "model_name": args.model_name,
        # The worker fits its stop (the cache flush) inside the SIGTERM-to-SIGKILL grace.
        "stop_grace_s": settings["restart.stop_timeout"],
    }
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    if args.release:
        from dataclasses import replace

        from mlxctl.releases.record import launch
        from mlxctl.releases.store import ReleaseStore

        store = ReleaseStore()
        release = replace(store.get(args.release), model=args.model)
        # launch() passes only the options the release's snapshot knows.
        spec = launch(release, store.folder(release.id), WORKER_HOST, port, **options)
        return spec.argv, spec.health_path, spec.env
    argv = contract.worker_argv(args.model, WORKER_HOST, port, **options)
    return argv, contract.HEALTH_PATH, {}
