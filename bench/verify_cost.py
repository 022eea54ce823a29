"""What one verify forward costs against a plain decode step, on this device, in process.

    python bench/verify_cost.py MODEL_DIR [--context 1400] [--repeats 10]

A prompt of `--context` tokens is prefilled once; then each row feeds 1 + k tokens on top of it,
evaluates the greedy choice at every position (one sync), and trims the cache back, `--repeats`
times after two untimed runs (first-use kernel compiles). The last rows run the worker's own
verify step (server/speculative/verify.py): without a logits processor, with one that has no
batch path (its positions sampled one at a time, a sync each), and with every draft accepted
(forced) under the forcing processor and under the tool-call grammar (inside a call's string
argument), each at once (the processors' batch path: one sync) and one position at a time.
Separates the forward's cost from the verify loop's. The last rows run the growing cache and the
forwards again through the worker's own attention for a verify's few queries, installed as the
worker installs it off Metal (server/model/verify_attention.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, cast

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
    # mlx-lm types both return shapes as one union; without return_config it gives two.
    model, tokenizer = cast(tuple[Any, Any], load(args.model))
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

    def accepted(k: int, grammar: Any, at_once: bool):
        """A verify of 1 + k whose drafts are all accepted: forced, under the grammar if any
        (fed a continuous text, so it stays inside the call's string)."""
        from server.testing.forcing import ForceTokens

        stream = tokenizer.encode(" Paris Lyon Nice Lille Metz Brest Dijon" * 400)
        at = {"i": 0}

        def run():
            i = at["i"]
            at["i"] += k + 1
            fed = stream[i : i + k + 1]
            forcing = ForceTokens(stream[i + 1 : i + k + 2], 0)
            processors = [forcing] if grammar is None else [forcing, grammar]
            if not at_once:  # a plain function has no batch path
                processors = [partial(_call, p) for p in processors]
            step = verify(
                model,
                cache,
                fed[0],
                fed[1:],
                sampler=lambda lp: mx.argmax(lp, axis=-1),
                processors=processors,
                context=TokenBuffer(),
                deliver=lambda token: False,
            )
            assert step.accepted == k, step
            trim_prompt_cache(cache, cache[0].offset - args.context)

        return run

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
    for k in (4, 8):
        for name in ("forcing", "forcing + grammar"):
            for at_once in (False, True):
                grammar = call_grammar(tokenizer) if name != "forcing" else None
                if name != "forcing" and grammar is None:
                    continue
                ms = timed(accepted(k, grammar, at_once))
                how = "at once" if at_once else "one by one"
                print(
                    f"| verify 1+{k} all accepted, {name}, {how} | {ms:.2f} | {ms / plain:.2f}x |"
                )
    # The worker's attention for 2-32 queries (server/model/verify_attention.py), as it installs
    # it off Metal: on MLX CUDA the rows above build a cuDNN graph per new key length.
    from server.model import verify_attention

    if verify_attention.install(model):
        for sizes in ((5,), (5, 7, 9, 13)):
            ms = timed(growing(sizes))
            trim_prompt_cache(cache, cache[0].offset - offset)
            label = f"growing cache, feeding {'/'.join(map(str, sizes))}, attention unfused"
            print(f"| {label} | {ms:.2f} | {ms / plain:.2f}x |")
        for n in (5, 17):
            ms = timed(forward(n))
            print(f"| forward {n} tokens, attention unfused | {ms:.2f} | {ms / plain:.2f}x |")
    return 0


def _call(processor: Any, tokens: Any, logits: Any) -> Any:
    return processor(tokens, logits)


def call_grammar(tokenizer: Any) -> Any:
    """The tool-call processor of a forced call, inside its string argument (None: the model's
    template writes no tool calls)."""
    import mlx.core as mx

    from server.decoding.constrained.plan import plan
    from server.decoding.constrained.processor import CallProcessor
    from server.testing.scripts import WEATHER_TOOL, call_text

    try:
        constraint = plan(tokenizer, [WEATHER_TOOL], "get_weather", parallel=False)
    except Exception:
        return None
    if constraint is None:  # plan's own answer for a syntax it cannot write
        return None
    processor = CallProcessor(constraint, 1 << 30)
    text = call_text(
        "get_weather", {"city": "Pa"}, "xml" if constraint.fmt == "qwen3_coder" else "json"
    )
    opening = tokenizer.encode(text[: text.index("Pa") + 2], add_special_tokens=False)
    zeros = mx.zeros((1, constraint.tokenizer.vocab_size))
    for i in range(len(opening) + 1):  # the prompt's last token, then the call so far
        processor(mx.array([0, *opening[:i]]), zeros)
    return processor


if __name__ == "__main__":
    raise SystemExit(main())
