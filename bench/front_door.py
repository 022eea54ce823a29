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
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """model = "{model}"
port = {port}

[restart]
backoff_initial = 0.2
health_interval = 0.5
stop_timeout = 30.0
"""
PROMPT = [{"role": "user", "content": "Tell me about lighthouses."}]


def default_model() -> Path:
    """The tests' tiny 32K-context model (built once, cached like the tests do)."""
    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    return build_tiny_model(root / "tiny-default")


class Service:
    def __init__(self, model: str, home: Path):
        from mlxctl.system.processes import free_port

        self.model = model
        self.env = {**os.environ, "MLXCTL_HOME": str(home)}
        self.env.pop("MLXCTL_WORKER_COMMAND", None)
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(CONFIG.format(model=model, port=free_port()))
        self.port = free_port()

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mlxctl", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=900)
        if check and done.returncode != 0:
            raise SystemExit(f"mlxctl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json", check=False).stdout)  # 3: not running


def stream_once(client: httpx.Client, url: str, model: str, max_tokens: int) -> dict:
    """One greedy stream: time to first token, the gaps between tokens, or the error."""
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True}  # fmt: skip
    began = time.perf_counter()
    stamps: list[float] = []
    try:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                return {"began": began, "error": f"HTTP {reply.status_code}"}
            done = False
            for line in reply.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"content"' in line:
                    stamps.append(time.perf_counter())
                elif line.startswith("data: ") and '"error"' in line:
                    return {"began": began, "error": line[6:200]}
            if not done:
                return {"began": began, "error": "the stream ended without [DONE]"}
    except httpx.HTTPError as exc:
        return {"began": began, "error": repr(exc)}
    if not stamps:
        return {"began": began, "error": "no tokens"}
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"began": began, "ttft": stamps[0] - began, "gaps": gaps, "end": stamps[-1]}


def one_token(client: httpx.Client, url: str, model: str) -> float:
    body = {"model": model, "messages": PROMPT, "max_tokens": 1, "temperature": 0.0}
    began = time.perf_counter()
    reply = client.post(f"{url}/v1/chat/completions", json=body)
    reply.raise_for_status()
    return time.perf_counter() - began


class VariantDoor:
    """A front door of its own process, with the HTTP parser and loop given, before the service's
    worker."""

    def __init__(self, http: str, loop: str, worker_url: str, root: Path = ROOT):
        from mlxctl.system.processes import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = root / "bench" / "front_door.py"  # that checkout's code: its ROOT comes first
        argv = [sys.executable, str(script), "--serve-door", worker_url, "--http", http,
                "--loops", loop, "--port", str(self.port)]  # fmt: skip
        self.process = subprocess.Popen(argv)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"the {http}/{loop} door did not come up")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


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


def spy_on(pids: dict[str, int], spy: tuple[str, Path] | None) -> list[subprocess.Popen]:
    """py-spy on each door process without pausing it, until SIGINT (then it writes its file)."""
    if spy is None:
        return []
    binary, folder = spy
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for side, pid in pids.items():
        name = "".join(c if c.isalnum() else "-" for c in side).strip("-")
        # Each thread on the CPU, and which one held the GIL (another's held it, the door waited).
        for kind, extra in (("cpu", []), ("gil", ["--gil"])):
            argv = [binary, "record", "--nonblocking", "--threads", *extra, "--rate", "500",
                    "--format", "raw", "--output", str(folder / f"spy-{kind}-{name}.txt"),
                    "--pid", str(pid)]  # fmt: skip
            spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
    time.sleep(1.0)  # attached before the first round
    return spies


def overhead(status: dict, model: str, runs: int, max_tokens: int, parsers: list[str],
             loops: list[str], other: Path | None = None,
             spy: tuple[str, Path] | None = None) -> None:  # fmt: skip
    """Part 1: `status` has the worker's `worker_url`, and the service's door `url` and
    `supervisor_pid` unless the worker is the fake one (then only doors alone run)."""
    sides = {"direct": status["worker_url"]}
    pids = {}  # whose CPU each path costs: the supervisor's whole process for the service's door
    if "url" in status:
        sides["service's door"] = status["url"]
        pids["service's door"] = status["supervisor_pid"]
    kinds = [(http, loop) for http in parsers for loop in loops]
    doors = {f"door alone, {h}/{lp}": VariantDoor(h, lp, status["worker_url"]) for h, lp in kinds}
    if other is not None:
        for h, lp in kinds:
            door = VariantDoor(h, lp, status["worker_url"], other)
            doors[f"{other.name}'s door, {h}/{lp}"] = door
    sides.update({name: door.url for name, door in doors.items()})
    pids.update({name: door.process.pid for name, door in doors.items()})
    spies = spy_on(pids, spy)
    try:
        med = measure(model, sides, runs, max_tokens, pids, status["worker_url"],
                      status.get("worker_pid"))  # fmt: skip
    finally:
        for process in spies:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        for door in doors.values():
            door.stop()
    print(f"\n## Proxy overhead ({runs} alternating runs, {max_tokens}-token greedy streams, "
          "medians)\n")  # fmt: skip
    print(
        "| path | TTFT ms | TTFT p10-p90 ms | ms per streamed token | decode tok/s "
        "| worker's own decode tok/s "
        "| worker CPU us per streamed token | 1-token request ms | door CPU ms per round "
        "| door CPU us per streamed token |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        m = med[side]
        cpu = f"{m['cpu']:.2f} | {m['cpu_token']:.1f}" if side in pids else "- | -"
        own = f"{m['worker']:.0f}" if m["worker"] else "-"
        spread = f"{m['ttft_p10']:.2f}-{m['ttft_p90']:.2f}"
        print(f"| {side} | {m['ttft']:.2f} | {spread} | {m['tok']:.3f} | {1000 / m['tok']:.0f} "
              f"| {own} | {m['worker_cpu']:.1f} | {m['req']:.2f} | {cpu} |")  # fmt: skip
    d = med["direct"]
    for side in list(sides)[1:]:
        w = med[side]
        own = f"x{w['worker'] / d['worker']:.3f}" if w["worker"] and d["worker"] else ""
        spread = f"{w['ttft_p10'] - d['ttft_p10']:+.2f} / {w['ttft_p90'] - d['ttft_p90']:+.2f}"
        print(f"| added by {side} | {w['ttft'] - d['ttft']:+.2f} | {spread} | "
              f"{w['tok'] - d['tok']:+.3f} | "
              f"x{d['tok'] / w['tok']:.3f} | {own} | {w['worker_cpu'] - d['worker_cpu']:+.1f} | "
              f"{w['req'] - d['req']:+.2f} | | |")  # fmt: skip
    print(f"\nA round is one {max_tokens}-token stream and one 1-token request; its CPU is the "
          "door process's (for the service's door, the supervisor's), a mean over the rounds; "
          "per streamed token, a stream's CPU less a 1-token request's, over its tokens past the "
          "first, each less the process's CPU while idle over its time. The worker's CPU is its "
          "process's over each stream (its prompt's included), over the tokens. The worker's own "
          "decode is its tokens over the seconds inside its decode steps (/v1/status) during the "
          "streams: slower behind a door, the door took cores its decode wanted.")  # fmt: skip


def cpu_seconds(pid: int | None) -> float:
    """A process's CPU time: to the nanosecond from each thread's schedstat where Linux has it
    (psutil counts 10 ms ticks, too coarse for one stream's share)."""
    if pid is None:
        return 0.0
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def worker_decode(probe: httpx.Client, worker_url: str) -> tuple[int, float]:
    """The worker's own count: tokens decoded and seconds inside its decode steps (not the
    replies' handling), from /v1/status; (0, 0.0) where it has none (the stand-in worker)."""
    try:
        said = probe.get(f"{worker_url}/v1/status").json().get("scheduler") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return 0, 0.0
    return int(said.get("decode_tokens") or 0), float(said.get("decode_seconds") or 0.0)


def measure(model: str, sides: dict[str, str], runs: int, max_tokens: int,
            pids: dict[str, int], worker_url: str, worker_pid: int | None) -> dict:  # fmt: skip
    """Per path, medians in ms of the times; a door's CPU, the worker's and its own decode
    speed over all rounds. Every path runs once per round, in turn."""
    keys = ("ttft", "tok", "req", "stream_cpu", "req_cpu", "stream_busy", "req_busy", "decoded",
            "decode_s", "worker_cpu")  # fmt: skip
    figures: dict[str, dict[str, list[float]]] = {side: {k: [] for k in keys} for side in sides}
    clients = {side: httpx.Client(timeout=300) for side in sides}  # a keep-alive connection each
    # Kept alive too: a new connection per status read delayed the next path's first token.
    probe = httpx.Client(timeout=30)
    firsts = {}
    for side, url in sides.items():  # warm every path; a new door's first request is its own cost
        firsts[side] = one_token(clients[side], url, model)
        stream_once(clients[side], url, model, 8)
    print("first 1-token request per path, ms: "
          + ", ".join(f"{side} {took * 1000:.1f}" for side, took in firsts.items()))  # fmt: skip
    idle = idle_rates(pids)
    print("door processes' CPU while idle, ms per second: "
          + ", ".join(f"{side} {rate * 1000:.1f}" for side, rate in idle.items()))  # fmt: skip
    for _ in range(runs):
        for side, url in sides.items():
            pid, got = pids.get(side), figures[side]
            decoded, decode_s = worker_decode(probe, worker_url)
            worker_cpu, cpu, began = cpu_seconds(worker_pid), cpu_seconds(pid), time.perf_counter()
            run = stream_once(clients[side], url, model, max_tokens)
            if "error" in run:
                raise SystemExit(f"{side}: {run['error']}")
            took = time.perf_counter() - began
            got["stream_cpu"].append(cpu_seconds(pid) - cpu)
            got["stream_busy"].append(got["stream_cpu"][-1] - idle.get(side, 0.0) * took)
            got["worker_cpu"].append(cpu_seconds(worker_pid) - worker_cpu)
            decoded_after, decode_s_after = worker_decode(probe, worker_url)
            got["decoded"].append(decoded_after - decoded)
            got["decode_s"].append(decode_s_after - decode_s)
            got["ttft"].append(run["ttft"])
            got["tok"].append(statistics.mean(run["gaps"]))
            cpu = cpu_seconds(pid)
            got["req"].append(one_token(clients[side], url, model))
            got["req_cpu"].append(cpu_seconds(pid) - cpu)
            got["req_busy"].append(got["req_cpu"][-1] - idle.get(side, 0.0) * got["req"][-1])
    return {side: summary(got, max_tokens) for side, got in figures.items()}


def idle_rates(pids: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """Each door process's CPU per second with no request (the supervisor's own loop and probes
    for the service's door), taken off its CPU per streamed token."""
    before = {side: cpu_seconds(pid) for side, pid in pids.items()}
    time.sleep(seconds)
    return {side: (cpu_seconds(pid) - before[side]) / seconds for side, pid in pids.items()}


def summary(got: dict[str, list[float]], max_tokens: int) -> dict[str, float | None]:
    """A path's figures: times as medians in ms; the door's CPU per round in ms and per
    streamed token in microseconds (a stream's CPU less a 1-token request's, over the tokens
    past the first, each less the process's idle CPU over its time); the worker's CPU per
    streamed token (its prompt's included) and its own decode tok/s, a median of the streams'
    (None: no /v1/status)."""
    stream_cpu, req_cpu = statistics.mean(got["stream_cpu"]), statistics.mean(got["req_cpu"])
    stream_busy, req_busy = statistics.mean(got["stream_busy"]), statistics.mean(got["req_busy"])
    # Per stream, as the client's pace is (a median): one slow stream sways a sum.
    rates = [n / t for n, t in zip(got["decoded"], got["decode_s"], strict=True) if t > 0]
    deciles = statistics.quantiles(got["ttft"], n=10) if len(got["ttft"]) > 1 else got["ttft"] * 9
    return {
        **{k: statistics.median(got[k]) * 1000 for k in ("ttft", "tok", "req")},
        "ttft_p10": deciles[0] * 1000,
        "ttft_p90": deciles[-1] * 1000,
        "cpu": (stream_cpu + req_cpu) * 1000,
        "cpu_token": (stream_busy - req_busy) / max(1, max_tokens - 1) * 1e6,
        "worker": statistics.median(rates) if rates else None,
        "worker_cpu": statistics.mean(got["worker_cpu"]) / max_tokens * 1e6,
    }


class Clients:
    """N clients streaming through the door back to back, every request recorded."""

    def __init__(self, url: str, model: str, count: int, max_tokens: int):
        self.runs: list[dict] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(url, model, max_tokens), daemon=True)
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self, url: str, model: str, max_tokens: int) -> None:
        client = httpx.Client(timeout=600)
        while not self.stop.is_set():
            self.runs.append(stream_once(client, url, model, max_tokens))

    def end(self) -> list[dict]:
        self.stop.set()
        for thread in self.threads:
            thread.join(600)
        return self.runs


def longest_wait(runs: list[dict]) -> float:
    return max((max([r["ttft"], *r["gaps"]]) for r in runs if "ttft" in r), default=0.0)


def switches(service: Service, clients: int, max_tokens: int) -> None:
    releases = json.loads(service.ctl("release", "ls", "--json").stdout)
    second = next(r["id"] for r in releases if r["note"] == "bench second")
    events = {
        "mlxctl migrate": lambda: service.ctl("migrate", "--to", second),
        "mlxctl rollback": lambda: service.ctl("rollback"),
        "kill -9 of the worker": lambda: crash(service),
    }
    print(f"\n## Switches under load ({clients} clients streaming {max_tokens} tokens back to "
          "back through the front door)\n")  # fmt: skip
    print("| event | event s | requests | failed | longest wait s | steady longest wait s | "
          "address before | address after |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, act in events.items():
        before = service.status()
        load = Clients(before["url"], service.model, clients, max_tokens)
        time.sleep(3.0)
        began = time.perf_counter()
        act()
        took = time.perf_counter() - began
        time.sleep(3.0)
        runs = load.end()
        after = service.status()
        steady = [r for r in runs if r.get("end", began) < began]
        during = [r for r in runs if r["began"] >= began or r.get("end", began) >= began]
        failed = [r for r in runs if "error" in r]
        print(f"| {name} | {took:.1f} | {len(runs)} | {len(failed)} | "
              f"{longest_wait(during):.2f} | {longest_wait(steady):.2f} | "
              f"{before['url']} | {after['url']} |")  # fmt: skip
        for run in failed[:3]:
            print(f"  failed: {run['error']}", file=sys.stderr)


def crash(service: Service) -> None:
    """SIGKILL the worker; back once the supervisor's restart serves again."""
    before = service.status()
    os.kill(before["worker_pid"], signal.SIGKILL)
    while True:
        now = service.status()
        if now["state"] == "RUNNING" and now["restarts"] > before["restarts"]:
            return
        time.sleep(0.1)


def against_fake_worker(runs: int, max_tokens: int, parsers: list[str], loops: list[str],
                        other: Path | None = None,
                        spy: tuple[str, Path] | None = None) -> int:  # fmt: skip
    """`--fake-worker`: the doors' own cost, with no model's time or CPU in the figures."""
    from mlxctl.system.processes import free_port

    port = free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_sse_worker.py"), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client() as probe:
            while not stream_once(probe, url, "fake", 1).get("ttft"):
                if time.monotonic() > deadline:
                    raise SystemExit("the fake worker did not come up")
                time.sleep(0.1)
        print(f"fake worker on {url} (bench/fake_sse_worker.py: 1 ms between events)")
        said = {"worker_url": url, "worker_pid": fake.pid}
        overhead(said, "fake", runs, max_tokens, parsers, loops, other, spy)
    finally:
        fake.terminate()
        fake.wait(10)
    return 0


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
