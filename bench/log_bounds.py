"""Log bounds under a flood: bytes on disk against the bound, and the supervision loop's stalls.

A real child process writes blocks of log lines at a set rate (or as fast as it can) for a few
seconds or up to --mb, in the two ways worker output reaches disk:

  owned     the worker rotates its own log (`--log-file`: server/edge/logfile.py's OwnedLog)
  external  any other command writes through an O_APPEND fd; the supervisor rotates it
            (mlxctl/supervisor/worker_output.py), here beside a loop that ticks like the daemon's

A sampler reads the bytes on disk (blocks of worker.log*) every 5 ms; the bound is max_bytes x
(backups + 1), plus one check interval's output at the rate the flood got. The stall is the
longest a loop tick took beyond its sleep. Both sides run the same modules read from git:
--before (default main) against the working tree.

    uv run python bench/log_bounds.py [--before main] [--mb 200] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Just what the two log modules need: no mlx, no web stack.
MODULES = (
    "server/edge/logfile.py",
    "server/edge/contract.py",
    "mlxctl/supervisor/worker_output.py",
)
PACKAGES = ("server", "mlxctl", "mlxctl/supervisor")
MAX_BYTES = 1024 * 1024
BACKUPS = 2
TICK = 0.1  # the daemon's TICK_SECONDS
MIB = 1024 * 1024

FLOOD = """
import os, sys, time
mode, path = sys.argv[1], sys.argv[2]
rate, total, seconds = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
if mode == "owned":
    from server.edge.logfile import OwnedLog
    OwnedLog(path, int(sys.argv[6]), int(sys.argv[7])).watch()
block = b"".join(b"flood line %08d " % i + b"x" * 100 + b"\\n" for i in range(500))
began = time.monotonic()
written = 0
while written < total and time.monotonic() - began < seconds:
    written += os.write(1, block)
    if rate > 0:  # pace to the rate
        ahead = written / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)
os.write(int(sys.argv[8]), b"%d %f\\n" % (written, time.monotonic() - began))
time.sleep(0.6)  # past a check: the rotation after the flood counts too
"""


def tree_of(ref: str | None, into: Path) -> Path:
    """The log modules at `ref` (None: the working tree) in a package tree of their own."""
    for package in PACKAGES:
        (into / package).mkdir(parents=True, exist_ok=True)
        (into / package / "__init__.py").write_text("")
    for module in MODULES:
        if ref is None:
            shutil.copyfile(REPO / module, into / module)
        else:
            text = subprocess.run(
                ["git", "show", f"{ref}:{module}"], cwd=REPO, check=True, capture_output=True
            ).stdout
            (into / module).write_bytes(text)
    return into


def on_disk(folder: Path) -> int:
    total = 0
    for path in folder.glob("worker.log*"):
        with contextlib.suppress(FileNotFoundError):  # rotated away since the listing
            total += path.stat().st_blocks * 512
    return total


def trial(mode: str, rate: float, total: int, seconds: float) -> dict:
    """One flood, run in a child interpreter whose path holds one tree (see main)."""
    from mlxctl.supervisor import worker_output
    from mlxctl.supervisor.worker_output import WorkerOutput
    from server.edge import logfile

    folder = Path(tempfile.mkdtemp(prefix="log-bounds-"))
    log = folder / "worker.log"
    output = WorkerOutput(log, MAX_BYTES, BACKUPS, log=lambda line: None)
    argv = [sys.executable, "-c", FLOOD, mode, str(log), str(rate), str(total), str(seconds)]
    report, reported = os.pipe()  # its stdout and stderr are the log: figures come back here
    argv += [str(MAX_BYTES), str(BACKUPS), str(reported)]
    fd = output.open_for(argv + (["--log-file"] if mode == "owned" else []))
    child = subprocess.Popen(argv, stdout=fd, stderr=fd, pass_fds=(reported,), env=os.environ)
    os.close(fd)
    os.close(reported)
    peak, sampling = 0, True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, on_disk(folder))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threaded = hasattr(output, "start_keeper")
    if threaded:
        output.start_keeper()
    stall = 0.0
    while child.poll() is None:  # the supervision loop: tick, keep the log the old way, sleep
        began = time.monotonic()
        if not threaded:
            output.keep(began)  # type: ignore[call-arg]  # the old signature took the clock
        time.sleep(TICK)
        stall = max(stall, time.monotonic() - began - TICK)
    sampling = False
    sampler.join()
    if threaded:
        output.stop_keeper()
    with os.fdopen(report, "rb") as figures:
        written, took = figures.read().split()
    final = on_disk(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "written": int(written),
        "rate": int(written) / float(took),
        "peak": peak,
        "final": final,
        "stall": stall,
        "interval": logfile.CHECK_SECONDS if mode == "owned" else worker_output.KEEP_EVERY,
    }


def run_trial(tree: Path, mode: str, rate: float, total: int, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--trial", mode]
    argv += [str(rate), str(total), str(seconds)]
    # Run from the tree: a `python -c` child puts its working directory first on its path.
    done = subprocess.run(
        argv, env=env, cwd=tree, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the 'before' side")
    parser.add_argument("--mb", type=int, default=200, help="most output per trial, in MB")
    parser.add_argument("--seconds", type=float, default=3.0, help="most time per trial")
    parser.add_argument(
        "--rates", default="0,100,10", help="MB/s, comma-separated; 0 is as fast as it can"
    )
    parser.add_argument("--trial", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        mode, rate, total, seconds = args.trial
        print(json.dumps(trial(mode, float(rate), int(total), float(seconds))))
        return
    bound = MAX_BYTES * (BACKUPS + 1)
    print(f"max_bytes {MAX_BYTES // MIB} MiB, backups {BACKUPS}: bound {bound / MIB:.0f} MiB")
    print(f"each flood: at most {args.mb} MB or {args.seconds:g} s")
    # Checks run on timers: on a loaded machine they come late, and a late check lets more in.
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| mode | code | asked (MB/s) | got (MB/s) | written (MB) | check every (s) "
          "| peak on disk (MiB) | bound + 1 interval (MiB) | over the bound (intervals) "
          "| left after (MiB) | longest loop stall (ms) |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        trees = {
            f"before ({args.before})": tree_of(args.before, Path(scratch, "before")),
            "after": tree_of(None, Path(scratch, "after")),
        }
        for mode in ("owned", "external"):
            for rate in (float(r) for r in args.rates.split(",")):
                for label, tree in trees.items():
                    got = run_trial(tree, mode, rate * 1e6, args.mb * 1_000_000, args.seconds)
                    stall = f"{got['stall'] * 1000:.0f}" if mode == "external" else "-"
                    # One interval of output at most, and never more than the flood wrote.
                    interval = min(got["rate"] * got["interval"], got["written"])
                    over = max(0, got["peak"] - bound) / interval
                    print(
                        f"| {mode} | {label} | {'max' if rate == 0 else f'{rate:g}'} "
                        f"| {got['rate'] / 1e6:.0f} | {got['written'] / 1e6:.0f} "
                        f"| {got['interval']:g} | {got['peak'] / MIB:.1f} "
                        f"| {(bound + interval) / MIB:.1f} | {over:.2f} "
                        f"| {got['final'] / MIB:.1f} | {stall} |",
                        flush=True,
                    )
    print("\nover the bound: how many check intervals of output the peak held beyond max_bytes x")
    print("(backups + 1); 1.00 is the goal, more is a check that came late (a loaded machine).")
    print("The loop stall applies to the supervisor's rotation (external); the worker rotates")
    print("its own log on a thread of its own (owned)")


if __name__ == "__main__":
    main()
