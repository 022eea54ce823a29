"""What batching costs at agentic context lengths: mlx-lm's BatchGenerator against one sequence
decoded alone, from the same long cached state.

    uv run python bench/batch_costs.py [--model PATH] [--context 20000] [--batch 1,2,4,8]

One prefill of `--context` tokens, then for each batch size B: B copies of that state inserted
(with `--new` fresh tokens each, a follow-up turn), time to the first token of all, decode
step time and tok/s, and the time to remove them; and the same follow-up decoded alone with
`stream_generate`. Run it on the device to see where the batch's time goes there.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # the repository: server, tests


def timed_sync(fn):
    import mlx.core as mx

    mx.synchronize()
    t = time.perf_counter()
    out = fn()
    mx.synchronize()
    return out, time.perf_counter() - t


def alone(model, tokenizer, cache, new: list[int], steps: int) -> dict:
    import mlx.core as mx
    from mlx_lm import stream_generate

    cache = copy.deepcopy(cache)
    mx.synchronize()
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in stream_generate(model, tokenizer, mx.array(new), max_tokens=steps, prompt_cache=cache):
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None, "no token came"
    return {
        "ttft": first - t0,
        "step_ms": (end - first) / max(1, n - 1) * 1000,
        "tps": (n - 1) / (end - first),
    }


def batched(model, cache, prompt_len: int, new: list[int], b: int, steps: int) -> dict:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, completion_batch_size=32, prefill_batch_size=8)
    caches = [copy.deepcopy(cache) for _ in range(b)]
    mx.eval([c.state for cs in caches for c in cs])
    mx.synchronize()
    t0 = time.perf_counter()
    uids = gen.insert(
        [new] * b, max_tokens=[steps + 8] * b, caches=caches, all_tokens=[[0] * prompt_len] * b
    )
    del caches
    got: dict[int, int] = {}
    tokens: dict[int, list[int]] = {u: [] for u in uids}
    first_all = None
    step_times: list[float] = []
    while len(step_times) < steps:
        ts = time.perf_counter()
        _, responses = gen.next()
        for r in responses:
            got[r.uid] = got.get(r.uid, 0) + 1
            tokens[r.uid].append(r.token)
        if first_all is None:
            if len(got) == b:
                first_all = time.perf_counter()
            continue
        step_times.append(time.perf_counter() - ts)
    assert first_all is not None, "no step ran"
    decode = sum(step_times)
    (_, t_remove) = timed_sync(lambda: gen.remove(uids))
    gen.close()
    return {
        "ttft_all": first_all - t0,
        "step_ms": decode / len(step_times) * 1000,
        "tps": b * len(step_times) / decode,
        "remove_ms": t_remove * 1000,
        "tokens": [tokens[u][: steps // 2] for u in uids],
    }


def main(argv=None) -> int:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from rich.console import Console
    from rich.table import Table

    from server.model.loading import load_model

    p = argparse.ArgumentParser(prog="bench/batch_costs.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="MLX model directory (default: the tiny 32K test model)")
    p.add_argument("--context", type=int, default=20000, help="cached tokens per sequence")
    p.add_argument("--new", type=int, default=400, help="new tokens per follow-up")
    p.add_argument("--batch", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=48, help="decode steps timed")
    p.add_argument(
        "--attention",
        default="masked,per-sequence",
        help="batched decode attention to compare: masked (mlx-lm's), per-sequence (ours)",
    )
    args = p.parse_args(argv)
    if args.model is None:  # the tests' tiny model, built once and cached as they do
        import os

        from server.testing.tiny_model import build_tiny_model

        root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
        args.model = str(build_tiny_model(root / "tiny-default"))
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    vocab = loaded.config["vocab_size"]
    prompt = [(7 * i + 3) % (vocab - 10) + 5 for i in range(args.context)]
    new = [(11 * i + 5) % (vocab - 10) + 5 for i in range(args.new)]
    cache = make_prompt_cache(model)
    step = 2048

    def prefill():
        for i in range(0, len(prompt), step):
            model(mx.array(prompt[i : i + step])[None], cache=cache)
            mx.eval([c.state for c in cache])

    _, t_prefill = timed_sync(prefill)
    console = Console(highlight=False, width=120)
    console.print(
        f"{loaded.backend}: prefill of {args.context} tokens {t_prefill:.1f} s "
        f"({args.context / t_prefill:.0f} tok/s); follow-ups add {args.new} tokens"
    )
    table = Table(title=f"Follow-up on a {args.context}-token cached state")
    cols = ("path", "B", "TTFT (all)", "decode step", "aggregate tok/s", "x alone", "remove")
    for col in (*cols, "tokens = masked"):
        table.add_column(col, justify="left" if col == "path" else "right")
    alone(model, tokenizer, cache, new, 4)  # warm the kernels
    a = alone(model, tokenizer, cache, new, args.steps)
    table.add_row(
        "stream_generate",
        "1",
        f"{a['ttft']:.2f}s",
        f"{a['step_ms']:.1f} ms",
        f"{a['tps']:.1f}",
        "1.00x",
        "-",
    )
    import server.model.batch_attention as batch_attention

    module: Any = sys.modules[type(model).__module__]  # the model's own file: its attention
    masked = module.scaled_dot_product_attention
    runs = [(kind, int(b)) for kind in args.attention.split(",") for b in args.batch.split(",")]
    reference: dict[int, list] = {}
    for kind, b in runs:
        module.scaled_dot_product_attention = masked
        if kind == "per-sequence":
            batch_attention.install(model)
        r = batched(model, cache, args.context, new, b, args.steps)
        same = "-" if b not in reference else ("yes" if r["tokens"] == reference[b] else "NO")
        reference.setdefault(b, r["tokens"])
        table.add_row(
            f"BatchGenerator, {kind}",
            str(b),
            f"{r['ttft_all']:.2f}s",
            f"{r['step_ms']:.1f} ms",
            f"{r['tps']:.1f}",
            f"{r['tps'] / a['tps']:.2f}x",
            f"{r['remove_ms']:.0f} ms",
            same,
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
