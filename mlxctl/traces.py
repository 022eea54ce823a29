"""The core of `mlxctl trace on|off|ls|show`: no Typer, no Rich.

On and off are remembered in the config (`trace.enabled`: every later start passes the worker
`--trace-dir`) and applied live: a running worker turns recording on or off through its
`POST /v1/trace`, with no restart and no request lost. Listing and showing read the files of
the home's `traces/` folder (or any folder a standalone worker was given).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mlxctl import config, paths
from mlxctl.errors import TraceError, WorkerUnavailable


@dataclass
class Switched:
    enabled: bool
    live: bool  # a running worker took it at once
    folder: str
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def switch(on: bool) -> Switched:
    """Remember `on` in the config, then tell the running worker, if one runs."""
    from mlxctl.status import status

    config.set_value("trace.enabled", "true" if on else "false")
    folder = str(paths.traces_dir())
    now = status(probe=False)
    if not now.running or not now.url:
        later = "the next start records" if on else "the next start records nothing"
        return Switched(on, False, folder, f"no worker runs: {later}")
    from mlxctl.worker_client import WorkerClient

    try:
        answer = WorkerClient.configured(now.url).json("POST", "/v1/trace", {"enabled": on})
    except WorkerUnavailable as exc:
        # An older release's worker: the flag reaches it at its next (re)start.
        return Switched(on, False, folder, f"{exc}: takes effect at the next restart")
    said = answer.get("dir") if isinstance(answer, dict) else None
    return Switched(on, True, said or folder)


@dataclass
class Summary:
    id: str
    file: str
    started_at: float | None
    method: str
    path: str
    status: int | None
    stream: bool
    events: int
    bytes: int
    duration_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def trace_files(folder: Path | None = None) -> list[Path]:
    """The folder's trace files, oldest first (their names start with the UTC time)."""
    root = folder or paths.traces_dir()
    return sorted(root.glob("*.json")) if root.is_dir() else []


def id_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


def summaries(limit: int | None = 20, folder: Path | None = None) -> list[Summary]:
    """The newest `limit` traces (all with None), newest first."""
    files = trace_files(folder)
    chosen = files if limit is None else files[-limit:] if limit > 0 else []
    return [_summary(path) for path in reversed(chosen)]


def _summary(path: Path) -> Summary:
    try:
        size = path.stat().st_size
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc, size = {}, 0  # pruned meanwhile, or not a trace: listed, not fatal
    request, response = doc.get("request") or {}, doc.get("response") or {}
    return Summary(
        id=doc.get("id") or id_of(path),
        file=str(path),
        started_at=doc.get("started_at"),
        method=request.get("method", "?"),
        path=request.get("path", "?"),
        status=response.get("status"),
        stream=bool(response.get("stream")),
        events=len(response.get("events") or []),
        bytes=size,
        duration_s=doc.get("duration_s"),
    )


def find(trace_id: str, folder: Path | None = None) -> Path:
    """The file of the trace whose id is (or starts with) `trace_id`."""
    matches = [p for p in trace_files(folder) if id_of(p).startswith(trace_id)]
    exact = [p for p in matches if id_of(p) == trace_id]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    where = folder or paths.traces_dir()
    if not matches:
        raise TraceError(f"no trace {trace_id!r} in {where}", hint="`mlxctl trace ls` lists them")
    raise TraceError(f"{len(matches)} traces start with {trace_id!r}", hint="give more of the id")


def read(trace_id: str, folder: Path | None = None) -> dict:
    path = find(trace_id, folder)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
