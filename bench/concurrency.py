"""Concurrent-sessions benchmark: our batching worker vs mlx_lm.server, N sessions at once.

    uv run python bench/concurrency.py [--model PATH] [--quick] [--sessions 1,2,4,8]

Closed loop: N Claude-Code-shaped sessions (the fixture's system prompt and tools, each its own
conversation: its own first message and tool results) run at once, each sending its next turn
as soon as the previous reply ends (or `--pause` seconds later, as a tool runs), greedy, short
replies. For every N both servers start fresh (empty caches) and take the same load one after
the other: ours over the Anthropic API, mlx_lm.server (default --decode-concurrency and
--prompt-concurrency) over OpenAI chat. At N = 1 our worker also runs one request at a time
(MLXCTL_SCHEDULER=sequential): the no-regression baseline.

Per N: TTFT p50/p95 (client side) and the follow-up turns' TTFT p50, aggregate decode tok/s two
ways: over the seconds when at least one reply was decoding (decode phase), and over the whole
run (output tok/s, the usual serving throughput figure), wall time, prompt tokens reused
(reported cached tokens), and for our batching worker its batch's own decode speed (tokens over
the seconds spent in decode steps, from `/v1/status`: what batching buys once prefills of others
are set aside).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# The repository on the path (server, tests, and the agentic bench's helpers).
_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

import httpx  # noqa: E402

from bench.agentic_requests import openai_stream_body, sse_events  # noqa: E402
from bench.agentic_servers import Server, default_model, free_port, mlx_lm_argv  # noqa: E402
from bench.agentic_session import (  # noqa: E402
    DEFAULT_FIXTURES,
    Session,
    build_session,
    load_fixture,
)


@dataclass
class Result:
    ttft: float | None = None
    start: float = 0.0
    first: float | None = None
    end: float = 0.0
    output_tokens: int = 0
    cached: int = 0
    error: str | None = None
    turn: int = 0


def sessions_for(base: Session, n: int) -> list[Session]:
    """N conversations on one system prompt and tools: each asks its own first question."""
    out = []
    for k in range(n):
        first = json.loads(json.dumps(base.first_user))
        first["content"][-1]["text"] += f"\nThis is session {k}: start with module {k}."
        turns = json.loads(json.dumps(base.turns).replace("toolu_bench", f"toolu_s{k}"))
        out.append(Session(base.system, base.tools, first, turns))
    return out


def ask_ours(url: str, session: Session, turn: int, args) -> Result:
    body = {
        "model": "claude-sonnet-4-5",
        "system": session.system,
        "tools": session.tools,
        "messages": session.anthropic_messages(turn),
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
    }
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "bench"}
    return _stream(url + "/v1/messages", body, headers, args, _anthropic_event)


def ask_mlx(url: str, session: Session, turn: int, args) -> Result:
    body = openai_stream_body(session, turn, args.max_tokens)
    return _stream(url + "/v1/chat/completions", body, {}, args, _openai_event)


def _anthropic_event(r: Result, event: dict) -> bool:
    """Update `r`; True when the event carries output."""
    kind = event.get("type")
    if kind == "message_start":
        r.cached = event["message"]["usage"].get("cache_read_input_tokens") or 0
    elif kind == "message_delta":
        r.output_tokens = (event.get("usage") or {}).get("output_tokens") or 0
    elif kind == "error":
        r.error = json.dumps(event.get("error"))[:200]
    return kind == "content_block_delta"


def _openai_event(r: Result, chunk: dict) -> bool:
    usage = chunk.get("usage")
    if usage:
        r.output_tokens = usage.get("completion_tokens") or 0
        r.cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning"):
            return True
    return False


def _stream(url: str, body: dict, headers: dict, args, on_event) -> Result:
    r = Result(start=time.perf_counter())
    try:
        with httpx.stream(
            "POST", url, json=body, headers=headers, timeout=args.request_timeout, trust_env=False
        ) as response:
            if response.status_code != 200:
                response.read()
                r.error = f"HTTP {response.status_code}: {response.text[:200]}"
            else:
                for event in sse_events(response):
                    if on_event(r, event) and r.first is None:
                        r.first = time.perf_counter()
    except httpx.HTTPError as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    r.end = time.perf_counter()
    r.first = r.first or r.end  # no output at all: the reply's end is its first byte
    r.ttft = r.first - r.start
    return r


def closed_loop(url: str, sessions: list[Session], ask, args) -> tuple[list[Result], float]:
    results: list[Result] = []
    lock = threading.Lock()

    def one(session: Session) -> None:
        for turn in range(args.turns + 1):
            if turn and args.pause:
                time.sleep(args.pause)  # the client's tool runs before the next turn
            r = ask(url, session, turn, args)
            r.turn = turn
            with lock:
                results.append(r)
            if r.error:
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def summary(results: list[Result], wall: float) -> dict:
    ttfts = sorted(r.ttft for r in results if r.ttft is not None)
    follow_ups = [r.ttft for r in results if r.ttft is not None and r.turn > 0]
    # Decode seconds: the union of the [first token, end] spans of all replies.
    spans = sorted((r.first, r.end) for r in results if r.first is not None)
    busy, current = 0.0, None  # the span being merged: (start, end)
    for a, b in spans:
        if current is None or a > current[1]:
            busy += (current[1] - current[0]) if current is not None else 0.0
            current = (a, b)
        else:
            current = (current[0], max(current[1], b))
    busy += (current[1] - current[0]) if current is not None else 0.0
    out_tokens = sum(r.output_tokens for r in results)
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r.error),
        "ttft_p50": statistics.median(ttfts) if ttfts else None,
        "ttft_p95": _p95(ttfts),
        "followup_p50": statistics.median(follow_ups) if follow_ups else None,
        "decode_tps": out_tokens / busy if busy > 0 else None,
        "output_tps": out_tokens / wall if wall > 0 else None,
        "wall": wall,
        "reused": sum(r.cached for r in results),
        "batch_decode_tps": None,
        "first_error": next((r.error for r in results if r.error), None),
    }


def our_scheduler(url: str) -> dict:
    """Our worker's `/v1/status` scheduler figures ({} when it does not answer)."""
    try:
        status = httpx.get(url + "/v1/status", headers={"x-api-key": "bench"}, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return status.get("scheduler") or {}


def batch_decode_speed(scheduler: dict) -> float | None:
    """Our worker's own decode speed: tokens over the seconds its batch spent in decode steps."""
    seconds = scheduler.get("decode_seconds") or 0
    return scheduler.get("decode_tokens", 0) / seconds if seconds else None


def memory_line(n: int, scheduler: dict) -> str:
    """What admission planned on and how often a request waited for memory."""
    memory = scheduler.get("memory") or {}
    gb = lambda key: f"{(memory.get(key) or 0) / 1e9:.1f} GB"  # noqa: E731
    return (
        f"ours N={n} memory: limit {gb('limit_bytes')} ({memory.get('limit_source')}), "
        f"active {gb('active_bytes')}, pool {gb('pool_bytes')}, free at last check "
        f"{gb('free_bytes')}; waited for memory: {memory.get('waited_for_memory', 0)} requests; "
        f"peak batch {scheduler.get('peak_batch_size')}"
    )


def _p95(xs: list[float]) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, round(0.95 * len(xs) + 0.5) - 1))]


def targets(rows: dict) -> list[tuple[str, bool | None]]:
    """The issue's targets, met or not (None: not measured in this run)."""

    def get(name, n, key):
        return (rows.get((name, n)) or {}).get(key)

    top = max((n for _, n in rows), default=0)

    def ratio_ok(a, b, op):
        return None if a is None or b is None else op(a, b)

    def beside_n1(a, b, op):  # a many-session figure against N=1: only when N > 1 ran
        return None if top <= 1 else ratio_ok(a, b, op)

    def decode_targets(key: str, label: str) -> list[tuple[str, bool | None]]:
        ours, theirs, alone = get("ours", top, key), get("mlx_lm", top, key), get("ours", 1, key)
        return [
            (
                f"N={top}: aggregate decode ({label} tok/s) >= 1.0x mlx_lm.server's",
                ratio_ok(ours, theirs, lambda a, b: a >= b),
            ),
            (
                f"N={top}: aggregate decode ({label} tok/s) >= 3x our N=1",
                beside_n1(ours, alone, lambda a, b: a >= 3 * b),
            ),
        ]

    return [
        (
            f"N={top}: TTFT p95 <= 1/3 of mlx_lm.server's",
            ratio_ok(
                get("ours", top, "ttft_p95"),
                get("mlx_lm", top, "ttft_p95"),
                lambda a, b: a <= b / 3,
            ),
        ),
        *decode_targets("decode_tps", "decode phase"),
        *decode_targets("output_tps", "output"),
        (
            f"N={top}: our batch's own decode speed >= 3x its N=1",
            beside_n1(
                get("ours", top, "batch_decode_tps"),
                get("ours", 1, "batch_decode_tps"),
                lambda a, b: a >= 3 * b,
            ),
        ),
        (
            "N=1: TTFT p50 <= 1.05x one-at-a-time",
            ratio_ok(
                get("ours", 1, "ttft_p50"),
                get("ours-seq", 1, "ttft_p50"),
                lambda a, b: a <= 1.05 * b,
            ),
        ),
        (
            "N=1: decode >= 0.95x one-at-a-time",
            ratio_ok(
                get("ours", 1, "decode_tps"),
                get("ours-seq", 1, "decode_tps"),
                lambda a, b: a >= 0.95 * b,
            ),
        ),
    ]


def print_report(console, rows: dict) -> None:
    from rich.table import Table

    table = Table(title="Concurrent Claude-Code-shaped sessions (closed loop)")
    for col in (
        "N",
        "server",
        "reqs",
        "TTFT p50",
        "TTFT p95",
        "follow-up TTFT p50",
        "decode phase tok/s",
        "output tok/s",
        "batch decode tok/s",
        "wall",
        "reused tok",
        "errors",
    ):
        table.add_column(col, justify="right" if col not in ("server",) else "left")
    for (name, n), s in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        table.add_row(
            str(n),
            name,
            str(s["requests"]),
            _fmt(s["ttft_p50"]),
            _fmt(s["ttft_p95"]),
            _fmt(s.get("followup_p50")),
            f"{s['decode_tps']:.1f}" if s["decode_tps"] else "-",
            f"{s['output_tps']:.1f}" if s.get("output_tps") else "-",
            f"{s['batch_decode_tps']:.1f}" if s.get("batch_decode_tps") else "-",
            _fmt(s["wall"]),
            str(s["reused"]),
            str(s["errors"]),
        )
    console.print(table)
    for text, ok in targets(rows):
        mark = "n/a" if ok is None else ("met" if ok else "NOT met")
        console.print(f"  {mark:>7}  {text}")
    for (name, n), s in rows.items():
        if s["first_error"]:
            console.print(f"  {name} N={n} first error: {s['first_error']}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/concurrency.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="MLX model directory (default: the tiny 32K test model)")
    p.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    p.add_argument("--sessions", default="1,2,4,8", help="the N to run (default 1,2,4,8)")
    p.add_argument("--turns", type=int, default=None, help="tool-result turns (3; 2 --quick)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="system text cut to 4000 chars, three tools, fewer turns: minutes",
    )
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per reply (default 16)")
    p.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds each session waits before its next turn, as a tool runs (default 0)",
    )
    p.add_argument("--servers", default="ours,mlx_lm", help="ours, mlx_lm (default both)")
    p.add_argument(
        "--ours-args", default="", help="extra flags for our worker, e.g. '--turn-seconds 0.5'"
    )
    p.add_argument(
        "--mlx-lm-args", default="", help="extra mlx_lm.server flags, e.g. '--prompt-concurrency 2'"
    )
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--request-timeout", type=float, default=900.0)
    p.add_argument("--json", type=Path, help="also write the summaries to this file")
    args = p.parse_args(argv)
    args.turns = args.turns if args.turns is not None else (2 if args.quick else 3)
    return args


def main(argv=None) -> int:
    from rich.console import Console

    from server.edge.blas import worker_env

    args = parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)
    model = str(Path(args.model).expanduser()) if args.model else str(default_model())
    base = build_session(
        load_fixture(args.fixtures), args.turns, 4 if args.quick else 8, args.quick
    )
    work = Path(tempfile.mkdtemp(prefix="mlxctl-bench-concurrent-"))
    wanted = {s.strip() for s in args.servers.split(",")}
    ns = [int(x) for x in args.sessions.split(",")]
    rows: dict = {}

    def server(name: str, n: int) -> Server:
        port, home = free_port(), work / f"{name}-{n}"
        env = worker_env({**os.environ, "MLXCTL_HOME": str(home)})
        if name == "mlx_lm":
            argv = mlx_lm_argv(model, port, args.max_tokens) + args.mlx_lm_args.split()
        else:
            argv = [
                sys.executable,
                "-m",
                "server",
                "--model",
                model,
                "--port",
                str(port),
                "--cache-dir",
                str(home / "kv"),
                *args.ours_args.split(),
            ]
            if name == "ours-seq":
                env["MLXCTL_SCHEDULER"] = "sequential"
        return Server(f"{name}-{n}", argv, port, env, work)

    plan = [(name, n) for n in ns for name in ("ours", "mlx_lm") if name in wanted]
    if 1 in ns and "ours" in wanted:
        plan.insert(0, ("ours-seq", 1))
    memory_notes: list[str] = []
    for name, n in plan:
        s = server(name, n)
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {name} N={n} ...")
        s.start(args.startup_timeout)
        try:
            ask = ask_mlx if name == "mlx_lm" else ask_ours
            results, wall = closed_loop(s.url, sessions_for(base, n), ask, args)
            scheduler = our_scheduler(s.url) if name == "ours" else {}
            batch_tps = batch_decode_speed(scheduler)
            if scheduler:
                memory_notes.append(memory_line(n, scheduler))
        finally:
            with contextlib.suppress(Exception):
                s.stop(grace=30)
        rows[(name, n)] = {**summary(results, wall), "batch_decode_tps": batch_tps}
    print_report(console, rows)
    for line in memory_notes:
        console.print(line)
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]}@{k[1]}": v for k, v in rows.items()}, indent=1))
    return 1 if any(s["errors"] for s in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
