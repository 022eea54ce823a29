"""Where mlxctl keeps its files. Everything lives under one home so tests can point it elsewhere."""

from __future__ import annotations

from pathlib import Path

# The home rule is the worker's (a standalone worker finds installed models the same way).
from server.edge.contract import home, kv_cache_dir, models_dir, traces_dir

__all__ = ["home", "kv_cache_dir", "models_dir", "traces_dir"]


def model_cache_dir(name: str) -> Path:
    """A `[models.NAME]` entry's disk tier, beside the default model's (kv_cache_dir())."""
    return kv_cache_dir().parent / "models" / name


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
