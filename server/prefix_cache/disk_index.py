"""The disk tier's folder layout and index, usable without MLX (the supervisor CLI imports this).

    <root>/<model-fingerprint>/index.json        per entry: token count, bytes, sha256, times,
                                                 versions (the token ids are in the file header)
    <root>/<model-fingerprint>/<id>.safetensors  one KV cache each (written by `disk.DiskTier`)
    <root>/<model-fingerprint>/.lock             flock held while the index changes
    <root>/last-request.json                     the newest request, replayed after a restart

The index is the source of truth: a file it does not name (a crash between rename and index
write) is an orphan and is deleted; an entry whose file is gone is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from server.edge.atomic import write_bytes

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
LAST_REQUEST = "last-request.json"  # server.api.last_request writes it at the root
SUFFIX = ".safetensors"
TMP_PREFIX = ".tmp-"


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) private to the user: KV caches hold the prompts' content."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    # TMP_PREFIX marks temp files so a scan can tell another worker's write in progress.
    write_bytes(path, data, tmp_prefix=TMP_PREFIX)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file from its JSON header; raises ValueError if bad."""
    with open(path, "rb") as f:
        return safetensors_metadata(f)


def safetensors_metadata(f: BinaryIO) -> dict[str, str]:
    """`read_safetensors_metadata` of an open binary file (or the bytes of one, in memory)."""
    head = f.read(8)
    if len(head) != 8:
        raise ValueError("truncated header")
    (n,) = struct.unpack("<Q", head)
    if n > 100 << 20:
        raise ValueError("header too large")
    raw = f.read(n)
    if len(raw) != n:
        raise ValueError("truncated header")
    try:
        return dict(json.loads(raw).get("__metadata__") or {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"bad header: {e}") from e


def cache_file_metadata(path: Path) -> dict[str, str]:
    """Our metadata of a KV file (mlx-lm's `save_prompt_cache` nests it under "0.")."""
    return cache_metadata(read_safetensors_metadata(path))


def cache_metadata(meta: dict[str, str]) -> dict[str, str]:
    return {k[2:]: v for k, v in meta.items() if k.startswith("0.")}


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on one model's folder (worker and CLI may both touch it)."""
    ensure_dir(folder)
    with open(folder / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def empty_index() -> dict:
    return {"format": FORMAT_VERSION, "bytes_written": 0, "entries": {}}


def read_index(folder: Path) -> dict:
    """The folder's index; a missing, corrupt or other-format index reads as empty (logged)."""
    path = Path(folder) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        return empty_index()
    except (OSError, ValueError) as e:
        log.warning("kv cache index %s unreadable (%s); starting empty", path, e)
        return empty_index()
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        log.warning("kv cache index %s has another format; starting empty", path)
        return empty_index()
    index.setdefault("bytes_written", 0)
    index.setdefault("entries", {})
    return index


def write_index(folder: Path, index: dict) -> None:
    atomic_write_bytes(Path(folder) / INDEX_NAME, json.dumps(index, indent=1).encode())


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _writer_alive(name: str) -> bool:
    """Whether the process named in a KV temp file (`.tmp-<id>-<pid>.safetensors`) still runs:
    a killed write's leftover goes at the next start, not 10 minutes later."""
    stem = name.removesuffix(SUFFIX)
    pid = stem.rsplit("-", 1)[-1]
    if stem == name or not pid.isdigit():
        return True  # not one of ours with a pid: let the age rule decide
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def reconcile(folder: Path, index: dict, grace_seconds: float = 600.0) -> dict:
    """Drop entries whose file is gone or has the wrong size; delete orphan files and temp
    files older than `grace_seconds` (younger ones may be another process's write)."""
    folder = Path(folder)
    entries = index["entries"]
    for key, entry in list(entries.items()):
        path = folder / entry.get("file", "")
        try:
            ok = path.is_file() and path.stat().st_size == entry.get("bytes")
        except OSError:
            ok = False
        if not ok:
            log.warning("kv cache entry %s: file missing or wrong size; dropped", path.name)
            del entries[key]
    named = {e["file"] for e in entries.values()}
    for path in folder.iterdir():
        if path.name.startswith(TMP_PREFIX):
            stale = _age(path) >= grace_seconds or not _writer_alive(path.name)
        else:
            stale = path.suffix == SUFFIX and path.name not in named
        if stale:
            log.warning("kv cache: removing unindexed file %s", path.name)
            with contextlib.suppress(OSError):
                path.unlink()
    return index


def model_folders(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / INDEX_NAME).exists())


def entry_row(
    tier: str, key: str, tokens: int, nbytes: int, created: float, last_used: float, model: str
) -> dict:
    """One row of a cache listing (GET /v1/cache, `mlxctl cache ls`), whatever the tier."""
    return {
        "tier": tier,
        "id": key,
        "tokens": tokens,
        "bytes": nbytes,
        "created": created,
        "last_used": last_used,
        "model": model,
    }


def index_row(key: str, entry: dict, model: str) -> dict:
    """The listing row of one disk index entry."""
    return entry_row(
        "disk",
        key,
        entry.get("tokens", 0),
        entry.get("bytes", 0),
        entry.get("created", 0.0),
        entry.get("last_used", 0.0),
        model,
    )


def list_entries(root: str | os.PathLike) -> list[dict]:
    """Every disk entry under `root`, most recently used first: `index_row` plus its path."""
    rows = []
    for folder in model_folders(root):
        for key, e in read_index(folder)["entries"].items():
            rows.append({**index_row(key, e, folder.name), "path": str(folder / e.get("file", ""))})
    rows.sort(key=lambda r: r["last_used"], reverse=True)
    return rows


def disk_stats(root: str | os.PathLike) -> dict:
    """Totals per model folder: entries, bytes, bytes_written (lifetime)."""
    out = {}
    for folder in model_folders(root):
        index = read_index(folder)
        out[folder.name] = {
            "entries": len(index["entries"]),
            "bytes": sum(e.get("bytes", 0) for e in index["entries"].values()),
            "bytes_written": index.get("bytes_written", 0),
        }
    return out


def remove_entries(folder: Path, keys: list[str]) -> int:
    """Remove entries from index and disk (index first, so a crash leaves only orphans)."""
    freed = 0
    with locked(folder):
        index = read_index(folder)
        files = []
        for key in keys:
            entry = index["entries"].pop(key, None)
            if entry is not None:
                freed += entry.get("bytes", 0)
                files.append(folder / entry["file"])
        write_index(folder, index)
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return freed


def _select(root, model: str | None, keep) -> list[tuple[Path, list[str], int]]:
    plan = []
    for folder in model_folders(root):
        if model is not None and folder.name != model:
            continue
        entries = read_index(folder)["entries"]
        keys = [k for k, e in entries.items() if not keep(e)]
        if keys:
            plan.append((folder, keys, sum(entries[k].get("bytes", 0) for k in keys)))
    return plan


def clear(root: str | os.PathLike, *, model: str | None = None, dry_run: bool = False) -> int:
    """Delete every disk entry (of one model folder when `model` is given); returns bytes freed.
    A whole clear takes the kept last request too: it holds a conversation's text."""
    plan = _select(root, model, keep=lambda e: False)
    if dry_run:
        return sum(b for _, _, b in plan)
    if model is None:
        (Path(root) / LAST_REQUEST).unlink(missing_ok=True)
    return sum(remove_entries(folder, keys) for folder, keys, _ in plan)


def prune(
    root: str | os.PathLike,
    older_than_seconds: float,
    *,
    model: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> int:
    """Delete disk entries not used for `older_than_seconds`; returns bytes freed."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    plan = _select(root, model, keep=lambda e: e.get("last_used", 0.0) >= cutoff)
    if dry_run:
        return sum(b for _, _, b in plan)
    return sum(remove_entries(folder, keys) for folder, keys, _ in plan)
