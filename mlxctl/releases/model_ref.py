"""The model a release records: a reference that resolves later, from any folder and home."""

from __future__ import annotations

from pathlib import Path

from mlxctl import lifecycle
from mlxctl.errors import ModelError
from mlxctl.models import registry
from mlxctl.status import status


def recorded_model(model: str | None = None, settings: dict | None = None) -> str:
    """`model` if given, else what the service serves now, else the configured one; a local
    path becomes absolute (a folder name would name an installed model that may not exist)."""
    if model:
        return reference(model)
    now = status(probe=False)
    if now.running and now.model:
        return reference(now.model, now.model_path)
    return reference(lifecycle.choose_model(settings=settings))


def reference(name: str, resolved: str | None = None) -> str:
    """An installed model's name as it is; a local folder as its absolute path; else `name`
    (a hub id). `resolved`: the path the supervisor loaded for `name`, where known."""
    try:
        if registry.is_model_dir(registry.model_dir(name)):
            return name
    except ModelError:
        pass  # not a valid installed name: a path or a hub id
    for candidate in (resolved, name):
        local = Path(candidate).expanduser() if candidate else None
        if local is not None and local.exists():
            return str(local.resolve())
    return name
