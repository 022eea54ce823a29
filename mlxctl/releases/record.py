"""A release: an immutable record of what the supervisor runs (worker, model, args, environment)."""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from server.edge.contract import worker_argv

BUILTIN = "builtin"
COMMAND = "command"
KINDS = (BUILTIN, COMMAND)
# What a worker can claim; migration smoke tests check exactly the claimed features.
FEATURES = ("openai", "anthropic", "tools", "stream", "cache")
BUILTIN_FEATURES = list(FEATURES)
# What every archived worker accepts: records from before `worker_options` was kept.
LEGACY_WORKER_OPTIONS = ("cache_dir", "cache_ram_bytes", "cache_disk_bytes")


def new_release_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass(frozen=True)
class Release:
    id: str
    kind: str
    model: str
    created: float = field(default_factory=time.time)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    # builtin: the snapshot folder (relative to the release folder) and the versions it ran with.
    source: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # command: a command line with {model}, {host}, {port} (and {python}) placeholders.
    command: str | None = None
    health_path: str = "/health"
    features: list[str] = field(default_factory=lambda: list(BUILTIN_FEATURES))
    # builtin: the launch options its snapshot's worker accepts (None: an older record).
    worker_options: list[str] | None = None
    # builtin, across machines: the layout it ran with (ranks, hosts, hostfile, backend,
    # parallel), used when the config names none, so a rollback goes back to the same hosts.
    distributed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Release:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def claims(self, feature: str) -> bool:
        return feature in self.features

    def describe(self) -> str:
        if self.kind == COMMAND:
            return self.command or ""
        return (
            f"server {self.versions.get('mlxctl', '?')} (mlx-lm {self.versions.get('mlx-lm', '?')})"
        )


@dataclass(frozen=True)
class Launch:
    """How to run a release: argv, environment additions and the health URL path."""

    argv: list[str]
    env: dict[str, str]
    health_path: str


def launch(
    release: Release, release_dir: Path | None, host: str, port: int, **worker_options: Any
) -> Launch:
    """The command line and environment that run `release` on host:port.

    `worker_options` (server.edge.contract.worker_argv's: cache budgets, allowed hosts, log file...)
    go to our own worker only, and only those its snapshot accepts; an external server has
    flags of its own.
    """
    env = dict(release.env)
    if release.kind == COMMAND:
        fields = {"python": sys.executable, "model": release.model, "host": host, "port": port}
        argv = [part.format(**fields) for part in shlex.split(release.command or "")]
        return Launch(argv + list(release.args), env, release.health_path)
    accepted: Collection[str] = (
        LEGACY_WORKER_OPTIONS if release.worker_options is None else release.worker_options
    )
    if release.distributed and not worker_options.get("ranks"):
        worker_options = {**worker_options, **release.distributed}
    options = {name: value for name, value in worker_options.items() if name in accepted}
    argv = [*worker_argv(release.model, host, port, **options), *release.args]
    if release.source and release_dir is not None:
        # The snapshot comes first on the path, so its `server` shadows the installed one:
        # an archived release keeps running after the package changes.
        src = str(release_dir / release.source)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return Launch(argv, env, release.health_path)
