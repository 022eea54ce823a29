"""Prefill and decode speed of the demo model on the CPU, with and without the two CPU measures.

The measures are (1) quantized weights expanded to float32 at load and (2) a system OpenBLAS
preloaded. Each configuration runs in its own process (LD_PRELOAD only applies at start).

    uv run python bench/cpu_speed.py [--model demo] [--decode 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT_LENGTHS = (512, 2048)
CONFIGS = [
    # (label, dequantize, openblas)
    ("quantized, bundled BLAS", False, False),
    ("quantized, OpenBLAS", False, True),
    ("float32, bundled BLAS", True, False),
    ("float32 + OpenBLAS (default)", True, True),
]


def measure(model_path: str, dequantize: bool, decode_tokens: int) -> dict:
    """Prefill tok/s per prompt length and decode tok/s, in this process."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    from server.model.loading import load_model

    loaded = load_model(model_path, dequantize_on_cpu=dequantize)
    vocab = loaded.config["vocab_size"]
    result: dict = {"backend": loaded.backend}
    for length in PROMPT_LENGTHS:
        tokens = mx.random.randint(100, vocab - 100, (length,), key=mx.random.key(length))
        prompt = cast(list[int], tokens.tolist())  # a 1-D array's tolist: a list of ints
        # Warm up kernels once on a short prompt so the first size does not pay for it.
        for _ in stream_generate(loaded.model, loaded.tokenizer, prompt[:32], max_tokens=1):
            pass
        responses = stream_generate(
            loaded.model, loaded.tokenizer, prompt, max_tokens=decode_tokens
        )
        last = list(responses)[-1]  # the final response carries both speeds
        result[f"prefill_{length}"] = last.prompt_tps
        result[f"decode_{length}"] = last.generation_tps
    return result


def run_config(model_path: str, dequantize: bool, openblas: bool, decode: int) -> dict:
    from server.edge.blas import find_openblas, worker_env

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if openblas:
        if not find_openblas():
            return {"error": "no system OpenBLAS found"}
        env = worker_env(env)
    command = [sys.executable, __file__, "--child", "--model", model_path, "--decode", str(decode)]
    if dequantize:
        command.append("--dequantize")
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="installed name, MLX directory or repo id")
    parser.add_argument("--decode", type=int, default=64, help="tokens to decode per run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dequantize", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.model, args.dequantize, args.decode)))
        return

    from rich.console import Console
    from rich.table import Table

    from mlxctl.models.registry import resolve

    model_path = resolve(args.model)
    table = Table(title=f"CPU speed, {args.model} ({model_path})")
    table.add_column("configuration")
    for length in PROMPT_LENGTHS:
        table.add_column(f"prefill {length} tok/s", justify="right")
    table.add_column(f"decode tok/s (after {PROMPT_LENGTHS[0]})", justify="right")
    rows = []
    for label, dequantize, openblas in CONFIGS:
        result = run_config(model_path, dequantize, openblas, args.decode)
        rows.append((label, result))
        if "error" in result:
            table.add_row(label, *(["-"] * len(PROMPT_LENGTHS)), result["error"])
            continue
        table.add_row(
            label,
            *(f"{result[f'prefill_{n}']:.1f}" for n in PROMPT_LENGTHS),
            f"{result[f'decode_{PROMPT_LENGTHS[0]}']:.1f}",
        )
    Console().print(table)
    base, best = rows[0][1], rows[-1][1]
    if "error" not in base and "error" not in best:
        n = PROMPT_LENGTHS[0]
        print(
            f"speed-up at {n} tokens: prefill x{best[f'prefill_{n}'] / base[f'prefill_{n}']:.1f}, "
            f"decode x{best[f'decode_{n}'] / base[f'decode_{n}']:.1f}"
        )
        print(
            f"targets: prefill {n} >= 150 tok/s: "
            f"{'met' if best[f'prefill_{n}'] >= 150 else 'MISSED'}; decode >= 10 tok/s: "
            f"{'met' if best[f'decode_{n}'] >= 10 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
