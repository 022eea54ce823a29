"""Where mlxctl keeps its files. Everything lives under one home so tests can point it elsewhere."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The mlxctl home: `MLXCTL_HOME`, or `~/.mlxctl`."""
    override = os.environ.get("MLXCTL_HOME")
    return Path(override).expanduser() if override else Path.home() / ".mlxctl"


def models_dir() -> Path:
    return home() / "models"


def downloads_dir() -> Path:
    return home() / "downloads"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def run_dir() -> Path:
    """Supervisor state: the state file, its locks and control files."""
    return home() / "run"


def state_file() -> Path:
    return run_dir() / "state.json"


def supervisor_lock() -> Path:
    """Held by the running supervisor for its whole life."""
    return run_dir() / "supervisor.lock"


def start_lock() -> Path:
    """Serialises concurrent `mlxctl start`/`stop` so exactly one supervisor is spawned."""
    return run_dir() / "start.lock"


def logs_dir() -> Path:
    return home() / "logs"


def worker_log() -> Path:
    return logs_dir() / "worker.log"


def supervisor_log() -> Path:
    return logs_dir() / "supervisor.log"
