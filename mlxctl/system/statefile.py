"""JSON state files written atomically: temp file, fsync, rename, fsync the folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlxctl.errors import StateError
from server.edge.atomic import fsync_dir, write_bytes

__all__ = [
    "clean_stale_temp",
    "fsync_dir",
    "read_json",
    "write_bytes",
    "write_json",
    "write_text",
]
STALE_TEMP_SECONDS = 60.0  # a live writer's temp file is younger than this


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def clean_stale_temp(folder: Path) -> list[Path]:
    """Remove temp files that writes killed mid-way left behind (`.NAME.XXXX.tmp`)."""
    removed = []
    now = time.time()
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


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
