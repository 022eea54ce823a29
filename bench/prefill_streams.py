"""Prefill streams: chunks of several prompts one after another, against at once on streams.

    uv run python bench/prefill_streams.py [--family gemma3] [--context 6700] [--chunk 300]
                                           [--prompts 2,4] [--streams 2] [--repeats 3]

In process, the tiny model of `--family` (`server.testing`): each prompt holds a `--context`-token
cache and prefills a `--chunk`-token chunk into it, as a screenshot turn does; the chunks run one
after another on one stream, then at once, each on its own stream as the worker's scheduler runs
them (`server.engine.prefill_streams`). Prints the seconds, the process's CPU seconds over wall
seconds (above 1: cores ran at once) and whether the caches match bit for bit.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gemma3")
    parser.add_argument("--context", type=int, default=6700)
    parser.add_argument("--chunk", type=int, default=300)
    parser.add_argument("--prompts", default="2,4")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.prefill import queue_chunk
    from server.engine.prefill_streams import PrefillStreams, available_cores
    from server.model.loading import load_model
    from tests.conftest import tiny_vlm

    model = load_model(str(tiny_vlm(args.family))).model
    n, size = args.context, args.chunk
    tokens = [(i * 7919) % 8000 + 100 for i in range(n + size * 8)]
    base = make_prompt_cache(model)
    for start in range(0, n, 2048):
        model(mx.array(tokens[start : min(n, start + 2048)])[None], cache=base)
        mx.eval([c.state for c in base])
    streams = PrefillStreams(args.streams).streams()

    def caches(k: int) -> list:
        out = [[copy.deepcopy(c) for c in base] for _ in range(k)]
        mx.eval([[c.state for c in cache] for cache in out])
        return out

    def run(k: int, together: bool) -> tuple[float, float, list]:
        prompts = caches(k)
        wall, cpu = time.perf_counter(), cpu_seconds()
        for i, cache in enumerate(prompts):
            with mx.stream(streams[i % len(streams)] if together else streams[0]):
                queue_chunk(model, cache, tokens, n + i * size, n + (i + 1) * size, None)
            if not together:
                mx.eval([c.state for c in cache])
        mx.eval([[c.state for c in cache] for cache in prompts])
        wall = time.perf_counter() - wall
        return wall, (cpu_seconds() - cpu) / wall, prompts

    print(f"\n{args.family}: {args.chunk}-token chunks on {n:,}-token caches, ", end="")
    print(f"{args.streams} streams, {available_cores()} cores, load {os.getloadavg()[0]:.2f}\n")
    print("| prompts | one after another | at once | at once / one after another | cpu/wall |")
    print("| --- | --- | --- | --- | --- |")
    same = True
    for k in (int(x) for x in args.prompts.split(",")):
        walls, ratios, loads = [], [], []
        for _ in range(args.repeats):
            alone, _, a = run(k, together=False)
            at_once, load, b = run(k, together=True)
            walls.append((alone, at_once))
            ratios.append(at_once / alone)
            loads.append(load)
            same &= all(
                mx.array_equal(x.state[0], y.state[0]).item()
                for ca, cb in zip(a, b, strict=True)
                for x, y in zip(ca, cb, strict=True)
            )
        alone = statistics.median(w[0] for w in walls)
        at_once = statistics.median(w[1] for w in walls)
        print(
            f"| {k} | {alone:.3f} s | {at_once:.3f} s | {statistics.median(ratios):.2f}x "
            f"| {statistics.median(loads):.2f} |"
        )
    print(f"\nthe caches matched bit for bit: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
