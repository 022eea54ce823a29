"""What one verify forward costs against a plain decode step, on this device, in process.

    python bench/verify_cost.py MODEL_DIR [--context 1400] [--repeats 10]

A prompt of `--context` tokens is prefilled once; then each row feeds 1 + k tokens on top of it,
evaluates the greedy choice at every position (one sync), and trims the cache back, `--repeats`
times after two untimed runs (first-use kernel compiles). The last rows run the worker's own
verify step (server/speculative/verify.py) with and without a logits processor, which samples
position by position. Separates the forward's cost from the verify loop's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    from server.speculative.verify import verify

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--context", type=int, default=1400)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    model, _ = load(args.model)
    cache = make_prompt_cache(model)
    mx.random.seed(0)
    prompt = mx.random.randint(0, 1000, (1, args.context))
    for start in range(0, args.context, 512):
        model(prompt[:, start : start + 512], cache=cache)
        mx.eval([c.state for c in cache])

    def timed(run) -> float:
        for _ in range(2):
            run()
        spent = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            run()
            spent.append(time.perf_counter() - began)
        return statistics.median(spent) * 1000

    def forward(n: int):
        def run():
            logits = model(mx.arange(1, n + 1)[None], cache=cache)
            mx.argmax(logits[0], axis=-1).tolist()
            trim_prompt_cache(cache, n)

        return run

    def verifying(k: int, processors: list):
        def run():
            verify(
                model,
                cache,
                7,
                [7] * k,
                sampler=lambda lp: mx.argmax(lp, axis=-1),
                processors=processors,
                context=TokenBuffer() if processors else None,
                deliver=lambda token: False,
            )
            trim_prompt_cache(cache, cache[0].offset - args.context)

        return run

    from mlx_lm.generate import TokenBuffer

    def keep(tokens, logits):
        return logits

    def growing(sizes: tuple[int, ...]):
        """As the worker decodes: the cache grows each step, the fed size changes."""
        state = {"i": 0}

        def run():
            n = sizes[state["i"] % len(sizes)]
            state["i"] += 1
            mx.argmax(model(mx.arange(1, n + 1)[None], cache=cache)[0], axis=-1).tolist()

        return run

    plain = timed(forward(1))
    print(f"\n{args.model}, context {args.context}, median of {args.repeats}\n")
    print("| step | ms | over a plain step |\n| --- | ---: | ---: |")
    print(f"| forward 1 token (plain) | {plain:.2f} | 1.00x |")
    for n in (2, 5, 9, 17):
        ms = timed(forward(n))
        print(f"| forward {n} tokens | {ms:.2f} | {ms / plain:.2f}x |")
    offset = cache[0].offset
    for sizes in ((1,), (5,), (5, 7, 9, 13)):
        ms = timed(growing(sizes))
        trim_prompt_cache(cache, cache[0].offset - offset)
        label = f"growing cache, feeding {'/'.join(map(str, sizes))}"
        print(f"| {label} | {ms:.2f} | {ms / plain:.2f}x |")
    for k, processors, label in ((4, [], "no processor"), (4, [keep], "a processor")):
        ms = timed(verifying(k, processors))
        print(f"| verify 1+{k}, {label} | {ms:.2f} | {ms / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
