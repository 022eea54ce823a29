"""The agentic bench's run: every step on each server in turn (session, restart, kill -9, a second
session), all servers up at once, and the RAM our cache holds after the session."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

import httpx

from bench.agentic_requests import Sample
from bench.agentic_servers import Supervised
from bench.agentic_session import Session, second_session


@dataclass
class Run:
    name: str
    samples: list[Sample] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    error: str | None = None
    # Wall seconds of the life-cycle steps and the RAM figures after the session (ours only).
    life: dict = field(default_factory=dict)


def run_interleaved(contenders, session: Session, args, say) -> list[Run]:
    """Run every step on each server in turn, all servers up at once, so both see the same
    machine load (this 2-core machine is shared; sequential runs compared different loads).

    `contenders` is a list of (name, make_server, request)."""
    runs = {name: Run(name) for name, _, _ in contenders}
    servers = {name: make() for name, make, _ in contenders}
    s2 = second_session(session)

    def start(name: str) -> None:
        runs[name].startup.append(servers[name].start(args.startup_timeout))
        say(f"{name}: up in {runs[name].startup[-1]:.1f}s at {servers[name].url}")

    def step(turn_session: Session, turn: int, label: str) -> None:
        for name, _, request in contenders:
            if runs[name].error:
                continue
            try:
                sample = request(servers[name].url, turn_session, turn, args, label)
            except RuntimeError as exc:
                runs[name].error = str(exc)
                say(f"{name}: {exc}")
                continue
            runs[name].samples.append(_report(say, name, sample))

    def bounce(name: str, kill: bool) -> float:
        """Stop (SIGTERM and its grace, or kill -9) and start again; the wall seconds."""
        t0 = time.perf_counter()
        if kill and isinstance(servers[name], Supervised):
            seconds = servers[name].kill_worker(args.startup_timeout)
            say(f"{name}: worker killed (-9), back under mlxctl in {seconds:.1f}s")
            return seconds
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(servers[name].process.pid, signal.SIGKILL)
            servers[name].process.wait(10)
        else:
            servers[name].stop()
        stopped = time.perf_counter() - t0
        say(f"{name}: {'killed (-9)' if kill else 'stopped'} in {stopped:.1f}s, starting again")
        start(name)
        return time.perf_counter() - t0

    try:
        for name in servers:
            try:
                start(name)
            except RuntimeError as exc:
                runs[name].error = str(exc)
                say(f"{name}: {exc}")
        for turn in range(args.turns + 1):
            step(session, turn, "0 (cold)" if turn == 0 else str(turn))
        if "ours" in servers and not runs["ours"].error:
            runs["ours"].life.update(ram_held(servers["ours"].url))
        restart, crash = f"{args.turns + 1} (restart)", f"{args.turns + 2} (kill -9)"
        for label, kill in ((restart, False), (crash, True)):
            if kill:
                time.sleep(args.settle)  # a crash after the write-behind window has passed
            for name in servers:
                if not runs[name].error:
                    try:
                        runs[name].life[f"bounce {label}"] = bounce(name, kill)
                    except RuntimeError as exc:
                        runs[name].error = str(exc)
                        say(f"{name}: {exc}")
            step(session, args.turns + (2 if kill else 1), label)
        step(s2, 0, "session 2")
    finally:
        for server in servers.values():
            server.stop()
    return [runs[name] for name, _, _ in contenders]


def ram_held(url: str) -> dict:
    """RAM bytes the worker's cache holds after the session, and its largest entry's."""
    try:
        stats = httpx.get(url + "/v1/status", timeout=10, trust_env=False).json()["cache"]
        entries = httpx.get(url + "/v1/cache", timeout=10, trust_env=False).json()["entries"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}
    ram = [e["bytes"] for e in entries if e.get("tier") == "ram"]
    return {"ram_bytes": stats["ram"]["bytes"], "ram_entries": len(ram), "entry_bytes": max(ram)}


def _report(say, name: str, s: Sample) -> Sample:
    ttft = f"{s.ttft:.2f}s" if s.ttft is not None else "-"
    say(
        f"{name} turn {s.label}: ttft {ttft}, prompt {s.prompt_tokens}, cached {s.cached_tokens}"
        + (f", ERROR {s.error}" if s.error else "")
    )
    return s
