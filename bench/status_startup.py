"""How fast `mlxctl status` answers with no worker running, beside a bare interpreter start.

Runs alternate (bare, status, bare, status, ...) so load from other jobs falls on both sides;
the table reports medians. `status` runs in shell prompts and watch loops: the goal is < 0.3 s.

    uv run python bench/status_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 0.3


def mlxctl_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m mlxctl`."""
    script = Path(sys.executable).parent / "mlxctl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlxctl"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    return time.perf_counter() - began, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MLXCTL_HOME": home, "NO_COLOR": "1"}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "mlxctl status": [*mlxctl_command(), "status"],
            "mlxctl status --json": [*mlxctl_command(), "status", "--json"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        codes: dict[str, set[int]] = {label: set() for label in commands}
        for argv in commands.values():
            timed(argv, env)  # one unmeasured run: the page cache, not our code
        for _ in range(args.runs):
            for label, argv in commands.items():
                seconds, code = timed(argv, env)
                times[label].append(seconds)
                codes[label].add(code)
    bare = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs each, alternated; no worker running\n")
    print("| command | median (s) | min (s) | max (s) | over bare python (s) | exit codes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, samples in times.items():
        median = statistics.median(samples)
        print(
            f"| `{label}` | {median:.3f} | {min(samples):.3f} | {max(samples):.3f} "
            f"| {median - bare:+.3f} | {','.join(map(str, sorted(codes[label])))} |"
        )
    status = statistics.median(times["mlxctl status"])
    verdict = "met" if status < GOAL_SECONDS else "NOT met"
    print(f"\n`mlxctl status` < {GOAL_SECONDS} s: {verdict} ({status:.3f} s)")


if __name__ == "__main__":
    main()
