"""The front door bench, part 1: a door's cost beside a direct connection to the same worker."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.front_door_service import one_token, stream_once

ROOT = Path(__file__).resolve().parent.parent


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
