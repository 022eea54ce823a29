"""How fast `mlxctl status` answers, with no worker and with one, beside a bare interpreter.

Runs alternate (bare, status, bare, status, ...) so load from other jobs falls on both sides;
the table reports medians. `status` runs in shell prompts and watch loops: the goals are < 0.3 s
with no worker and < 0.5 s with one, and at most 1.6x the CLI framework's own import (`import
typer`: a yardstick for what any Typer CLI costs on this machine). "With one" is a real
supervisor running the fake worker (`tests/fake_worker.py`, reporting a full cache and request
ring), so the view has every panel; the view it printed comes last.

    uv run python bench/status_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 0.3
GOAL_WITH_WORKER = 0.5
GOAL_RATIO = 1.6  # over `import typer`
TYPER = "python -c 'import typer'"
REPO = Path(__file__).resolve().parent.parent
FAKE_WORKER = f"{{python}} {REPO / 'tests' / 'fake_worker.py'} --model {{model}} --port {{port}}"
GIB = 1024**3
# What the fake worker reports: a warm cache and a ring of requests, so every panel is drawn.
FAKE_STATUS = {
    "context_length": 32768,
    "cache": {
        "ram": {"entries": 4, "bytes": 5 * GIB, "budget_bytes": 8 * GIB},
        "disk": {"entries": 7, "bytes": 14 * GIB, "budget_bytes": 20 * GIB,
                 "bytes_written": 3 << 20},
        "hits": 9, "ram_hits": 8, "disk_hits": 1, "misses": 3, "lookup_tokens": 300000,
        "tokens_reused": 259000, "hit_rate": 0.75, "token_reuse_rate": 0.863,
        "prefill_tokens_per_second": 812.3, "prefill_seconds_saved": 318.8,
    },
    "recent": [
        {"id": f"{i:012x}", "time": 1.7e9 + 60 * i, "protocol": "anthropic",
         "prompt_tokens": 27342 + 300 * i, "cached_tokens": 27000 + 300 * i if i else 0,
         "completion_tokens": 40, "ttft_ms": 740 if i else 36550, "tokens_per_second": 11.2,
         "finish": "tool_calls"}
        for i in reversed(range(8))  # newest first, as the worker reports them
    ],
}  # fmt: skip


def mlxctl_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m mlxctl`."""
    script = Path(sys.executable).parent / "mlxctl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlxctl"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    return time.perf_counter() - began, done.returncode


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(commands: dict[str, list[str]], env: dict[str, str], runs: int):
    times: dict[str, list[float]] = {label: [] for label in commands}
    codes: dict[str, set[int]] = {label: set() for label in commands}
    for argv in commands.values():
        timed(argv, env)  # one unmeasured run: the page cache, not our code
    for _ in range(runs):
        for label, argv in commands.items():
            seconds, code = timed(argv, env)
            times[label].append(seconds)
            codes[label].add(code)
    return times, codes


def print_table(title: str, times: dict, codes: dict, bare: float) -> None:
    print(f"\n{title}\n")
    print("| command | median (s) | min (s) | max (s) | over bare python (s) | exit codes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, samples in times.items():
        median = statistics.median(samples)
        print(
            f"| `{label}` | {median:.3f} | {min(samples):.3f} | {max(samples):.3f} "
            f"| {median - bare:+.3f} | {','.join(map(str, sorted(codes[label])))} |"
        )


def with_worker(runs: int) -> tuple[dict, dict, str]:
    """Times `mlxctl status` against a supervised fake worker; returns the view it printed."""
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        model = Path(home, "bench-model")  # a model folder; the fake worker reads none of it
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "llama"}')
        (model / "model.safetensors").write_bytes(b"")
        Path(home, "config.toml").write_text(f'model = "{model}"\nport = {port}\n')
        env = {
            **os.environ, "MLXCTL_HOME": home, "NO_COLOR": "1", "COLUMNS": "100",
            "MLXCTL_WORKER_COMMAND": FAKE_WORKER, "FAKE_WORKER_STATUS": json.dumps(FAKE_STATUS),
        }  # fmt: skip
        ctl = mlxctl_command()
        started = subprocess.run([*ctl, "start"], env=env, capture_output=True, text=True)
        if started.returncode:
            raise SystemExit(f"mlxctl start failed:\n{started.stderr}")
        try:
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                TYPER: [sys.executable, "-c", "import typer"],
                "mlxctl status": [*ctl, "status"],
                "mlxctl status --json": [*ctl, "status", "--json"],
            }
            times, codes = measure(commands, env, runs)
            view = subprocess.run([*ctl, "status"], env=env, capture_output=True, text=True)
        finally:
            subprocess.run([*ctl, "stop"], env=env, capture_output=True, timeout=60)
    return times, codes, view.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MLXCTL_HOME": home, "NO_COLOR": "1"}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            TYPER: [sys.executable, "-c", "import typer"],
            "mlxctl status": [*mlxctl_command(), "status"],
            "mlxctl status --json": [*mlxctl_command(), "status", "--json"],
        }
        times, codes = measure(commands, env, args.runs)
    bare = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs each, alternated")
    print_table("no worker running", times, codes, bare)
    live_times, live_codes, view = with_worker(args.runs)
    live_bare = statistics.median(live_times["python -c pass"])
    print_table("a supervisor and a (fake) worker running", live_times, live_codes, live_bare)
    status = statistics.median(times["mlxctl status"])
    live = statistics.median(live_times["mlxctl status"])
    print()
    for label, value, goal in (
        ("no worker", status, GOAL_SECONDS),
        ("with a worker", live, GOAL_WITH_WORKER),
    ):
        verdict = "met" if value < goal else "NOT met"
        print(f"`mlxctl status` < {goal} s, {label}: {verdict} ({value:.3f} s)")
    for label, samples in (("no worker", times), ("with a worker", live_times)):
        ratio = statistics.median(samples["mlxctl status"]) / statistics.median(samples[TYPER])
        verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
        print(f"`mlxctl status` <= {GOAL_RATIO}x `import typer`, {label}: {verdict} ({ratio:.2f}x)")
    print("\nthe view it printed (100 columns):\n")
    print(view)


if __name__ == "__main__":
    main()
