"""JSON state files written atomically: temp file, fsync, rename, fsync the folder."""

from __future__ import annotations

import json
from pathlib import Path

from mlxctl.errors import StateError
from server.atomic import fsync_dir, write_bytes

__all__ = ["fsync_dir", "read_json", "write_bytes", "write_json", "write_text"]


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def read_json(path: Path) -> dict | None:
    """The object in `path`; None when absent; StateError when unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(f"{path}: not a JSON object")
    return data
