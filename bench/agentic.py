"""Agentic-session benchmark: our worker vs mlx_lm.server on a Claude-Code-shaped session.

    uv run python bench/agentic.py [--model PATH] [--turns 10] [--quick] [--fixtures DIR]
    uv run mlxctl bench ...                      (the same)

The session is the real system prompt and tools of a captured Claude Code request (read from the
fixtures at run time), then turns that each add an assistant tool_use, a user tool_result of a
few hundred tokens of generated text, and ask for a short greedy reply. Both servers get the same
conversation (ours over the Anthropic API, mlx_lm.server over OpenAI chat). Both servers run at
once and take each step in turn, so both see the same load on a shared machine:

  session 1, turns 0..N on a fresh server (turn 0 is the cold first request);
  restart the server, then turn N+1 (the first request after a restart);
  kill -9 the server (after --settle seconds) and start it again, then turn N+2;
  session 2: a new first request whose billing-header value differs.

A second table gives the life cycle in wall seconds (stop or kill + start + TTFT: restart and
crash to first token, against a cold start) and the RAM our cache holds after the session
against one entry's size.

Time to first token (TTFT) is measured on the client per request. The default model is the tiny
random-weight 32K-context test model; its cold ~20K-token prefill takes about a minute on 2 CPU
cores, so the full run takes a while without a working cache.

The parts, one job each: `agentic_session` (the conversation), `agentic_servers`,
`agentic_requests` (one request), `agentic_run` (the steps) and `agentic_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script: `mlxctl` and `server` come from the checkout

from bench.agentic_report import print_report  # noqa: E402
from bench.agentic_requests import anthropic_request, openai_request  # noqa: E402
from bench.agentic_run import run_interleaved  # noqa: E402
from bench.agentic_servers import (  # noqa: E402
    Server,
    Supervised,
    default_model,
    free_port,
    mlx_lm_argv,
)
from bench.agentic_session import DEFAULT_FIXTURES, build_session, load_fixture  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/agentic.py",
        description="Replay a Claude-Code-shaped session against our worker and mlx_lm.server "
        "(same model, one after the other) and print time to first token per turn, the ratios "
        "and the targets of the prefix cache.",
    )
    p.add_argument("--model", help="MLX model directory (default: the tiny 32K test model)")
    p.add_argument(
        "--fixtures",
        type=Path,
        default=DEFAULT_FIXTURES,
        help=f"captured Claude Code requests (default {DEFAULT_FIXTURES})",
    )
    p.add_argument(
        "--turns",
        type=int,
        default=None,
        help="follow-up turns after the first request (default 10; 3 with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer turns, smaller tool results, system text cut to 4000 chars and "
        "three small tools: a smoke run in minutes",
    )
    p.add_argument(
        "--result-lines",
        type=int,
        default=None,
        help="lines per tool result (default 8, a few hundred tokens; 4 with --quick)",
    )
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per reply (default 8)")
    p.add_argument(
        "--no-supervisor",
        dest="supervised",
        action="store_false",
        help="run our worker directly instead of under mlxctl (which restarts it after kill -9)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds between the restart turn and the kill -9: our write-behind delay has "
        "passed (default 3)",
    )
    p.add_argument(
        "--servers",
        default="ours,mlx_lm",
        help="which to run, comma-separated: ours, mlx_lm (default both)",
    )
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--request-timeout", type=float, default=900.0, help="seconds (default 900)")
    p.add_argument("--json", type=Path, help="also write the raw samples to this file")
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs and print where"
    )
    args = p.parse_args(argv)
    if args.turns is None:
        args.turns = 3 if args.quick else 10
    if args.result_lines is None:
        args.result_lines = 4 if args.quick else 8
    return args


def main(argv=None) -> int:
    from rich.console import Console

    from server.edge.blas import worker_env

    args = parse_args(argv)
    # Wide enough for the table when piped to a file (Rich assumes 80 columns there).
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)

    def say(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")

    model = str(Path(args.model).expanduser()) if args.model else str(default_model())
    session = build_session(
        load_fixture(args.fixtures), args.turns + 2, args.result_lines, args.quick
    )
    work = Path(tempfile.mkdtemp(prefix="mlxctl-bench-"))
    # A fresh mlxctl home: our worker's disk cache starts empty, so turn 0 is really cold.
    env = worker_env({**os.environ, "MLXCTL_HOME": str(work / "home")})
    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    say(f"model {model}; {args.turns} follow-up turns; logs in {work}")

    def ours_server():
        port = free_port()
        if args.supervised:
            return Supervised(model, port, env, work)
        argv = [sys.executable, "-m", "server", "--model", model, "--port", str(port)]
        return Server("ours", argv, port, env, work)

    def mlx_lm_server():
        port = free_port()
        return Server("mlx_lm", mlx_lm_argv(model, port, args.max_tokens), port, env, work)

    contenders = [
        (name, make, request)
        for name, make, request in (
            ("ours", ours_server, anthropic_request),
            ("mlx_lm", mlx_lm_server, openai_request),
        )
        if name in servers
    ]
    runs = {run.name: run for run in run_interleaved(contenders, session, args, say)}
    ours, mlx = runs.get("ours"), runs.get("mlx_lm")
    print_report(console, ours, mlx, args)
    if args.json:
        raw = {
            "model": model,
            "turns": args.turns,
            "quick": args.quick,
            "runs": [asdict(r) for r in (ours, mlx) if r],
        }
        args.json.write_text(json.dumps(raw, indent=1))
    if args.keep_logs:
        say(f"logs kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    failed = any(r and (r.error or any(s.error for s in r.samples)) for r in (ours, mlx))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
