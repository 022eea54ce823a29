"""Two models served at once by name: a small model's requests while the big one streams, and the
time a model takes to start on its first request.

    uv run python bench/models.py [--big PATH] [--small PATH] [--runs 10] [--starts 3]

Starts a private service (its own MLXCTL_HOME) whose default model is the big one (the tests'
tiny builder at 8 layers, hidden 512, unless --big) with `[models.small]` (the tests' tiny model
unless --small) beside it, idle-unloaded after a few seconds. Part 1: the small model's time to
first token alone, then while the big one streams without pause through the same front door, and
the big one's decode speed alone and with the small one's requests. Part 2: a request for the
small model while it is not running (the start, held at the door) beside one while it runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.front_door_service import Service, stream_once  # noqa: E402

IDLE_UNLOAD_S = 3.0
SMALL = """
[models.small]
path = "{path}"
aliases = ["claude-haiku-*"]
idle_unload = "{idle}s"
"""


def tiny(name: str, **shape) -> str:
    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    return str(build_tiny_model(root / name, **shape))


class BigStream:
    """The big model streaming long replies, one after another, until stopped."""

    def __init__(self, url: str, model: str, max_tokens: int):
        self.url, self.model, self.max_tokens = url, model, max_tokens
        self.runs: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=600) as client:
            while not self.stop.is_set():
                self.runs.append(stream_once(client, self.url, self.model, self.max_tokens))

    def __enter__(self) -> BigStream:
        self.thread.start()
        time.sleep(1.0)  # its first tokens are flowing
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(600)


def small_ttfts(url: str, runs: int) -> list[float]:
    out = []
    with httpx.Client(timeout=600) as client:
        for _ in range(runs):
            run = stream_once(client, url, "small", 8)
            if "error" in run:
                raise SystemExit(f"small model request failed: {run['error']}")
            out.append(run["ttft"])
            time.sleep(0.2)
    return out


def decode_tps(runs: list[dict]) -> float:
    gaps = [g for run in runs if "gaps" in run for g in run["gaps"]]
    return 1 / statistics.median(gaps) if gaps else float("nan")


def side_by_side(service: Service, url: str, runs: int, max_tokens: int) -> None:
    with BigStream(url, service.model, max_tokens) as big_alone:
        time.sleep(3.0)
    small_ttfts(url, 2)  # started and warm (it idles out within seconds)
    alone = small_ttfts(url, runs)
    with BigStream(url, service.model, max_tokens) as big:
        beside = small_ttfts(url, runs)
    errors = [r["error"] for r in big.runs + big_alone.runs if "error" in r]
    ms = [1000 * statistics.median(alone), 1000 * statistics.median(beside)]
    print(f"\n{runs} small-model streams (8 tokens) each way; big model max_tokens {max_tokens}")
    print("| small model | TTFT ms (median) | TTFT ms (max) |")
    print("|---|---:|---:|")
    print(f"| idle big model | {ms[0]:.1f} | {1000 * max(alone):.1f} |")
    print(f"| while the big one streams | {ms[1]:.1f} | {1000 * max(beside):.1f} |")
    print(f"| ratio | x{ms[1] / ms[0]:.2f} | |")
    tps_alone, tps_beside = decode_tps(big_alone.runs), decode_tps(big.runs)
    print("\n| big model | decode tok/s | failed streams |")
    print("|---|---:|---:|")
    print(f"| alone | {tps_alone:.0f} | {sum('error' in r for r in big_alone.runs)} |")
    print(f"| with small-model requests | {tps_beside:.0f} | "
          f"{sum('error' in r for r in big.runs)} |")  # fmt: skip
    if errors:
        print(f"errors: {errors[:3]}")


def starts(service: Service, url: str, count: int) -> None:
    cold, warm = [], []
    with httpx.Client(timeout=600) as client:
        for _ in range(count):
            wait_until_unloaded(service)
            run = stream_once(client, url, "small", 1)
            if "error" in run:
                raise SystemExit(f"a cold request failed: {run['error']}")
            cold.append(run["ttft"])
            warm.append(stream_once(client, url, "small", 1)["ttft"])
    print(f"\n{count} starts on demand (idle_unload {IDLE_UNLOAD_S:g}s between them)")
    print("| small model, first token | median s | max s |")
    print("|---|---:|---:|")
    print(f"| not running: started by the request | {statistics.median(cold):.2f} | "
          f"{max(cold):.2f} |")  # fmt: skip
    print(f"| running | {statistics.median(warm):.3f} | {max(warm):.3f} |")


def wait_until_unloaded(service: Service, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {r["name"]: r for r in service.status().get("models") or []}
        if rows.get("small", {}).get("state") in ("stopped", "idle-unloaded"):
            return
        time.sleep(0.5)
    raise SystemExit("the small model did not unload")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", default=None, help="the default model (an MLX directory)")
    parser.add_argument("--small", default=None, help="the [models.small] model")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=2000, help="the big model's streams")
    args = parser.parse_args()
    big = args.big or tiny("tiny-bench-big", layers=8, hidden=512)
    small = args.small or tiny("tiny-default")
    with tempfile.TemporaryDirectory(prefix="models-bench-") as tmp:
        service = Service(big, Path(tmp) / "home")
        with open(Path(tmp) / "home" / "config.toml", "a") as config:
            config.write(SMALL.format(path=small, idle=IDLE_UNLOAD_S))
        service.ctl("start", "--port", str(service.port))
        url = f"http://127.0.0.1:{service.port}"
        try:
            print(f"big (default) {big}\nsmall [models.small] {small}\nfront door {url}")
            side_by_side(service, url, args.runs, args.max_tokens)
            starts(service, url, args.starts)
        finally:
            service.ctl("stop", "--timeout", "5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
