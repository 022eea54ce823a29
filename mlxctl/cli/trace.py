"""`mlxctl trace on|off|ls|show`: record each request and its reply, and read them back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from mlxctl.cli.output import output
from mlxctl.units import human_bytes

trace_app = typer.Typer(
    help="Request traces: each request and its reply or stream as one JSON file, keys "
    "redacted, bounded by trace.max_bytes and trace.max_files (off by default).\n\n"
    "On and off apply to the running worker at once (no restart) and are kept in the config "
    "for later starts.",
    no_args_is_help=True,
)
FOLDER = typer.Option(None, "--dir", help="A trace folder (default: the home's traces/).")
AS_JSON = typer.Option(False, "--json", help="Print JSON.")


def _switch(on: bool, as_json: bool) -> None:
    from mlxctl import traces

    done = traces.switch(on)
    if as_json:
        output.json(done.to_dict())
        return
    state = "on" if on else "off"
    where = f", into {done.folder}" if on else ""
    if done.live:
        output.success(f"request traces {state}{where}")
    else:
        output.success(f"request traces {state} in the config{where}")
    if done.note:
        output.note(done.note)


@trace_app.command("on")
def on_command(as_json: bool = AS_JSON) -> None:
    """Record every request and its reply or stream (the running worker starts at once)."""
    _switch(True, as_json)


@trace_app.command("off")
def off_command(as_json: bool = AS_JSON) -> None:
    """Stop recording; the traces already written stay (see `trace ls`)."""
    _switch(False, as_json)


@trace_app.command("ls")
def ls_command(
    lines: int = typer.Option(20, "--lines", "-n", help="How many of the newest to list."),
    every: bool = typer.Option(False, "--all", help="List them all."),
    folder: Path = FOLDER,
    as_json: bool = AS_JSON,
) -> None:
    """List the newest traces: id, time, request, status, stream events, size."""
    from mlxctl import traces

    found = traces.summaries(None if every else lines, folder)
    if as_json:
        output.json([s.to_dict() for s in found])
        return
    total = traces.trace_files(folder)
    if not total:
        output.print("no traces yet (`mlxctl trace on` records them)")
        return
    rows = [
        (
            s.id,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started_at or 0)),
            f"{s.method} {s.path}",
            str(s.status or "-"),
            f"stream, {s.events} events" if s.stream else "json",
            human_bytes(s.bytes),
            f"{s.duration_s:.2f}s" if s.duration_s is not None else "-",
        )
        for s in found
    ]
    output.table("id", "time", "request", "status", "reply", "size", "took", rows=rows)
    size = sum(p.stat().st_size for p in total if p.exists())
    output.print(f"{len(found)} of {len(total)} traces shown; {human_bytes(size)} on disk")


@trace_app.command("show")
def show_command(
    trace_id: str = typer.Argument(..., help="A trace id from `trace ls` (a prefix will do)."),
    folder: Path = FOLDER,
    as_json: bool = AS_JSON,
) -> None:
    """Show one trace: the request, then the reply or the stream event by event."""
    from mlxctl import traces

    doc = traces.read(trace_id, folder)
    if as_json:
        output.json(doc)
        return
    request, response = doc.get("request") or {}, doc.get("response") or {}
    events = response.get("events") or []
    shape = f"stream of {len(events)} events" if response.get("stream") else "json"
    output.plain(
        f"trace {doc.get('id')}: {request.get('method')} {request.get('path')} -> "
        f"{response.get('status')}, {shape}, {doc.get('duration_s')}s"
    )
    output.plain("request headers: " + json.dumps(request.get("headers") or {}))
    output.plain("request body:")
    output.plain(json.dumps(request.get("body"), indent=2, ensure_ascii=False))
    if not response.get("stream"):
        output.plain("reply body:")
        output.plain(json.dumps(response.get("body"), indent=2, ensure_ascii=False))
        return
    output.plain("stream:")
    for event in events:
        name = event.get("event") or (": " + event["comment"] if "comment" in event else "data")
        data = json.dumps(event["data"], ensure_ascii=False) if "data" in event else ""
        output.plain(f"{event.get('t', 0):8.3f}  {name}  {data}".rstrip())


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
