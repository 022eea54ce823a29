"""One model on 1 vs 2 ranks on this machine (ring over loopback, tensor parallel), and a paper
estimate for two Macs over Thunderbolt from the bytes the ranks measurably exchange per token.

Each configuration is the worker's own command line (`server.edge.contract.worker_argv`, which runs
ranks under `python -m server.launch`, i.e. mlx.launch). Per configuration: TTFT and decode tok/s
of greedy streams over the OpenAI API (median of --runs), and for 2 ranks the TCP bytes the ranks
sent on their ring ports (`ss -tin` counters) during decode, per generated token.

    uv run python bench/distributed.py [--hidden 256] [--layers 8] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the repository: server, tests

import httpx  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me everything about rivers and the sea."}]


def start(model: str, ranks: int, port: int) -> tuple[subprocess.Popen, int | None]:
    from server.edge import contract
    from server.edge.blas import worker_env

    kv = tempfile.mkdtemp(prefix="bench-dist-kv-")
    argv = contract.worker_argv(model, "127.0.0.1", port, cache_disk_bytes=0, cache_dir=kv)
    ring_port = None
    if ranks > 1:
        argv = contract.worker_argv(
            model, "127.0.0.1", port, cache_disk_bytes=0, cache_dir=kv, ranks=ranks
        )
        ring_port = int(argv[argv.index("--starting-port") + 1])
    log = open(Path(kv) / "worker.log", "wb")  # noqa: SIM115 (lives as long as the worker)
    process = subprocess.Popen(
        argv, env=worker_env(), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited: {(Path(kv) / 'worker.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, ring_port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("worker not healthy in 600s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def stream(port: int, max_tokens: int) -> tuple[float, float, int]:
    """(TTFT s, decode tok/s, tokens) of one greedy stream."""
    body = {"model": "claude-bench", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    started, first, last, tokens = time.perf_counter(), None, None, 0
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    ttft = (first or time.perf_counter()) - started
    decode = (tokens - 1) / (last - first) if first and last and last > first else 0.0
    return ttft, decode, tokens


def ring_bytes_sent(ring_port: int, ranks: int) -> int:
    """TCP bytes sent so far on connections to or from the ring's ports (all ranks here)."""
    out = subprocess.run(["ss", "-tinH"], capture_output=True, text=True, check=True).stdout
    ports = {str(p) for p in range(ring_port, ring_port + ranks)}
    total, on_ring = 0, False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            fields = line.split()
            ends = [f.rsplit(":", 1)[-1] for f in fields[3:5]]
            on_ring = any(e in ports for e in ends)
        elif on_ring and (match := re.search(r"bytes_sent:(\d+)", line)):
            total += int(match.group(1))
    return total


def measure(model: str, ranks: int, tokens: int, runs: int, port: int) -> dict:
    process, ring_port = start(model, ranks, port)
    try:
        stream(port, 4)  # warm-up
        results = [stream(port, tokens) for _ in range(runs)]
        row = {
            "ranks": ranks,
            "ttft": statistics.median(r[0] for r in results),
            "decode": statistics.median(r[1] for r in results),
        }
        if ring_port is not None:
            # Decode traffic per token: a long reply minus a one-token one (same prefill).
            before = ring_bytes_sent(ring_port, ranks)
            stream(port, 1)
            one = ring_bytes_sent(ring_port, ranks) - before
            before = ring_bytes_sent(ring_port, ranks)
            _, _, n = stream(port, tokens)
            many = ring_bytes_sent(ring_port, ranks) - before
            row["bytes_per_token"] = (many - one) / max(1, n - 1)
        return row
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target-hidden", type=int, default=8192, help="paper model (70B-like)")
    parser.add_argument("--target-layers", type=int, default=80)
    parser.add_argument("--tb-gbytes-per-s", type=float, default=2.5, help="assumed TB TCP rate")
    parser.add_argument("--tb-latency-us", type=float, default=50.0, help="assumed per collective")
    args = parser.parse_args()

    from server.testing.tiny_model import build_tiny_model
    from tests.conftest import model_cache_dir

    key = f"tiny-bench-h{args.hidden}-l{args.layers}"
    model = str(build_tiny_model(model_cache_dir() / key, hidden=args.hidden, layers=args.layers))
    from server.edge.contract import free_port_run

    rows = [measure(model, n, args.tokens, args.runs, free_port_run(1)) for n in (1, 2)]
    print(
        f"\nqwen2 tiny model, hidden {args.hidden}, {args.layers} layers, float32 on CPU; "
        f"{args.tokens}-token greedy streams, median of {args.runs}; 2 shared cores\n"
    )
    print("| ranks | TTFT | decode tok/s | vs 1 rank | ring bytes/token |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        per = row.get("bytes_per_token")
        print(
            f"| {row['ranks']} | {row['ttft'] * 1000:.0f} ms | {row['decode']:.1f} | "
            f"{row['decode'] / rows[0]['decode']:.2f}x | {f'{per:,.0f}' if per else '-'} |"
        )
    per = rows[1]["bytes_per_token"]
    # Tensor parallel: two all_sums of one hidden vector per layer (attention and MLP outputs).
    collectives = 2 * args.layers
    coefficient = per / (collectives * args.hidden * 4)  # float32 here
    target_bytes = coefficient * 2 * args.target_layers * args.target_hidden * 2  # bf16 on Metal
    target_collectives = 2 * args.target_layers
    # Both ranks send at once over a full-duplex link: each direction carries half the bytes.
    per_direction = target_bytes / 2
    comm_s = target_collectives * args.tb_latency_us * 1e-6 + per_direction / (
        args.tb_gbytes_per_s * 1e9
    )
    print(
        f"\nmeasured: {per:,.0f} B/token over {collectives} all_sums of {args.hidden} floats = "
        f"{coefficient:.2f}x one vector's bytes per all_sum (both ranks' sends together)\n"
        f"paper, two Macs over Thunderbolt, {args.target_layers} layers x {args.target_hidden} "
        f"hidden, bf16: {target_bytes / 1e6:.2f} MB/token (both ways) in {target_collectives} "
        f"collectives; "
        f"at an assumed {args.tb_gbytes_per_s:g} GB/s and {args.tb_latency_us:g} us each: "
        f"{comm_s * 1000:.1f} ms/token of communication (a ceiling of {1 / comm_s:.0f} tok/s "
        f"from the link alone; each Mac computes half of every layer)"
    )


if __name__ == "__main__":
    main()
