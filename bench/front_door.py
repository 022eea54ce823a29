"""The front door: what it costs beside a direct connection, and switches under load.

    uv run python bench/front_door.py [--model PATH] [--runs 20] [--clients 4]
        [--http h11,httptools] [--loops asyncio,uvloop] [--no-switches] [--fake-worker]
        [--door-from DIR] [--py-spy BIN --spy-dir DIR]

Starts a private service (its own MLXCTL_HOME, the tests' tiny model unless --model) on a port
given to `start`. Part 1 alternates the same greedy stream through the front door and straight
to the worker's private port: time to first token, time per streamed token, a 1-token request;
the door's added cost and the ratio (goal: under 2 ms a request, no decode slowdown); beside the
service's own door, a door per `--http` parser (uvicorn's h11 or httptools) and `--loops` event
loop (asyncio's or uvloop) runs in a process of its own before the same worker, so they compare in
one run, with each door process's CPU per round and per streamed token, the worker's CPU per
streamed token and its own decode speed (tokens over the seconds inside its decode steps, from
/v1/status: slower behind a door, the door took cores the decode wanted); `--door-from DIR` adds a
door of another checkout (say main's, before a change) per parser and loop; `--py-spy BIN` samples
each door process's threads through part 1 into `--spy-dir` (collapsed stacks per thread: on the
CPU, and holding the GIL). `--fake-worker` runs
the doors alone before bench/fake_sse_worker.py instead (no model, no service): the door's own
cost. Part 2 keeps N
clients streaming through the door while `mlxctl migrate`, `mlxctl rollback` and a `kill -9` of
the worker happen: failed requests, the longest wait a client saw (first token or a gap between
tokens) beside the steady state's, and the address before and after.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.front_door_cost import against_fake_worker, overhead  # noqa: E402
from bench.front_door_service import Service, default_model  # noqa: E402
from bench.front_door_switches import switches  # noqa: E402


def serve_door(worker_url: str, http: str, loop: str, port: int) -> int:
    """`--serve-door`: one front door routed to `worker_url` until SIGTERM."""
    from mlxctl.front_door.guard import Guard
    from mlxctl.front_door.routes import Route
    from mlxctl.front_door.serve import FrontDoor

    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # the door's thread inherits the mask
    door = FrontDoor("127.0.0.1", port, Guard("", "127.0.0.1"), 60.0, http=http, loop=loop)
    door.routes.set(Route(url=worker_url))
    door.start()
    signal.sigwait(stops)
    door.stop()
    return 0


def installed(names: list[str]) -> list[str]:
    """The parsers and loops uvicorn can load here (httptools and uvloop are no dependencies:
    measured no clear gain)."""
    import importlib.util

    optional = ("httptools", "uvloop")
    missing = [n for n in names if n in optional and not importlib.util.find_spec(n)]
    for name in missing:
        print(f"skipping the {name} doors: not installed (`uv pip install {name}`)")
    return [n for n in names if n and n not in missing]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="an MLX directory (default: tiny model)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--http", default="h11,httptools", help="door parsers to compare")
    parser.add_argument("--loops", default="asyncio", help="door event loops to compare")
    parser.add_argument("--no-switches", action="store_true", help="part 1 only")
    alone = "part 1 only: doors alone before bench/fake_sse_worker.py (no model)"
    parser.add_argument("--fake-worker", action="store_true", help=alone)
    other = "a door from another checkout too (its root), e.g. main's before a change"
    parser.add_argument("--door-from", type=Path, default=None, help=other)
    parser.add_argument("--py-spy", default=None, help="a py-spy binary: sample the doors")
    parser.add_argument("--spy-dir", type=Path, default=Path("door-spy"), help="py-spy's files")
    parser.add_argument("--serve-door", metavar="WORKER_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_door:
        return serve_door(args.serve_door, args.http, args.loops, args.port)
    parsers, loops = installed(args.http.split(",")), installed(args.loops.split(","))
    spy = (args.py_spy, args.spy_dir) if args.py_spy else None
    if args.fake_worker:
        return against_fake_worker(args.runs, args.max_tokens, parsers, loops, args.door_from, spy)
    model = args.model or str(default_model())
    with tempfile.TemporaryDirectory(prefix="front-door-bench-") as tmp:
        service = Service(model, Path(tmp) / "home")
        service.ctl("release", "archive", "--note", "bench first")
        service.ctl("release", "archive", "--note", "bench second")
        service.ctl("start", "--port", str(service.port))
        try:
            print(f"model {model}; front door on port {service.port}")
            overhead(service.status(), model, args.runs, args.max_tokens, parsers, loops,
                     args.door_from, spy)  # fmt: skip
            if not args.no_switches:
                switches(service, args.clients, 32)
        finally:
            service.ctl("stop", "--timeout", "5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
