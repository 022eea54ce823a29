"""Constrained tool calls: compile time, per-token cost and decode speed with and without.

`python bench/constrained.py` builds (once, cached) a tiny random-weight model on a ~151K-token
vocabulary (`server.testing.wide_vocab`) and prints:
- grammar compile time per request for Claude Code's 12 tools (`tests/fixtures/`), both
  call syntaxes, forced and `auto` (target: under 50 ms), and the dry run that finds the
  smallest forced call (admission's 400 below it; once per tool set);
- per-token cost of the mask: llguidance computing it, and applying it to MLX logits;
- decode tok/s of the same prompt with and without the constraint (target: at least 0.9x).
The network is tiny (a few ms per token), so the ratio is a worst case: the overhead is a fixed
number of microseconds per token, a smaller share of a real model's step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: server, tests
FIXTURE = ROOT / "tests/fixtures/claude-code-2.1.328/fix-notes-session/001.json"


def fixture_tools() -> list[dict]:
    body = json.loads(FIXTURE.read_text())["body"]
    return [
        {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
        for t in body["tools"]
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def compile_table(tokenizer, tools, repeat: int) -> None:
    from server.decoding.constrained import plan as planning

    planning.ll_tokenizer(tokenizer)  # built once per model (not per request)
    print(f"\ncompile per request, {len(tools)} tools (median of {repeat})")
    print(f"{'syntax':12s} {'tool_choice':12s} {'compile':>11s}")
    for fmt in ("json_tools", "qwen3_coder"):
        for choice in ("required", "Edit", "auto"):
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                with_format(tokenizer, fmt, planning.plan, tokenizer, tools, choice)
                times.append(time.perf_counter() - started)
            print(f"{fmt:12s} {choice:12s} {ms(statistics.median(times))}")
    smallest_table(tokenizer, tools, repeat)


def smallest_table(tokenizer, tools, repeat: int) -> None:
    """Admission's dry run: the smallest forced reply, once per tool set (then remembered)."""
    from server.decoding.constrained import plan as planning

    print(f"\nsmallest forced call at admission, first time per tool set (median of {repeat})")
    print(f"{'syntax':12s} {'tool_choice':12s} {'dry run':>11s} {'tokens':>7s}")
    for fmt in ("json_tools", "qwen3_coder"):
        for choice in ("required", "Edit", "Read"):
            constraint = with_format(tokenizer, fmt, planning.plan, tokenizer, tools, choice)
            times = []
            for _ in range(repeat):
                planning._SMALLEST.clear()
                started = time.perf_counter()
                smallest = constraint.smallest_reply()
                times.append(time.perf_counter() - started)
            print(f"{fmt:12s} {choice:12s} {ms(statistics.median(times))} {smallest:7d}")


def with_format(tokenizer, fmt: str, fn, *args):
    """Run `fn(*args)` with the tokenizer's tool parser set to mlx-lm's `fmt` module."""
    import importlib

    module = importlib.import_module(f"mlx_lm.tool_parsers.{fmt}")
    saved = tokenizer._tool_parser
    tokenizer._tool_parser = module.parse_tool_call
    try:
        return fn(*args)
    finally:
        tokenizer._tool_parser = saved


def mask_table(tokenizer, tools) -> None:
    import mlx.core as mx
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    from server.decoding.constrained import masks
    from server.decoding.constrained.plan import plan
    from server.testing.scripts import call_text

    constraint = plan(tokenizer, tools, "required")
    assert constraint is not None, "the model's template writes no tool calls"
    llt = constraint.tokenizer
    args = {
        "file_path": "/tmp/notes/todo.md",
        "old_string": "def f(x):\n    return x\n" * 3,
        "new_string": "def f(x):\n    return 2 * x  # doubled\n" * 3,
    }
    ids = llt.tokenize_str(call_text("Edit", args))
    matcher = constraint.new_matcher()
    words = allocate_token_bitmask(1, llt.vocab_size)
    compute, unpack_np, apply_np, apply_mx = [], [], [], []
    logits = mx.random.normal((1, llt.vocab_size))
    mx.eval(logits)
    for token in ids:
        t0 = time.perf_counter()
        fill_next_token_bitmask(matcher, words)
        t1 = time.perf_counter()
        masks.unpack(words, llt.vocab_size)
        t2 = time.perf_counter()
        mx.eval(masks.apply(logits, words))
        t3 = time.perf_counter()
        mx.eval(_apply_with_mx_ops(logits, words))
        t4 = time.perf_counter()
        compute.append(t1 - t0)
        unpack_np.append(t2 - t1)
        apply_np.append(t3 - t2)
        apply_mx.append(t4 - t3)
        assert matcher.consume_token(token), matcher.get_error()
    print(f"\nper-token mask cost, vocabulary {llt.vocab_size}, {len(ids)} tokens of an Edit call")
    print(f"{'step':44s} {'median':>11s} {'mean':>11s} {'p90':>11s}")
    for name, values in [
        ("llguidance computes the mask", compute),
        ("numpy unpacks the bitmask", unpack_np),
        ("MLX applies it (numpy unpack, mx.where)", apply_np),
        ("MLX applies it (MLX bit ops, mx.where)", apply_mx),
    ]:
        values = sorted(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        median, mean = statistics.median(values), statistics.mean(values)
        print(f"{name:44s} {ms(median)} {ms(mean)} {ms(p90)}")


def _apply_with_mx_ops(logits, words):
    """The alternative kept out of the worker: unpack the bits with MLX ops on the device."""
    import mlx.core as mx

    vocab = logits.shape[-1]
    bits = mx.array(words.reshape(-1).view("uint32"))
    shifts = mx.arange(32, dtype=mx.uint32)
    allowed = ((bits[:, None] >> shifts) & 1).reshape(-1)[:vocab].astype(mx.bool_)
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


def decode_table(loaded, tools, max_tokens: int, runs: int) -> None:
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from server.decoding.constrained.processor import CallProcessor
    from server.prompt.render import PromptRenderer
    from server.request import ChatRequest

    renderer = PromptRenderer(loaded.tokenizer, loaded.config)
    request = ChatRequest(
        messages=[{"role": "user", "content": "Write the notes file."}],
        tools=tools,
        tool_choice="Write",
        max_tokens=max_tokens,
    )
    rendered = renderer.render(request)
    prompt = mx.array(rendered.tokens)
    print(f"\ndecode, one request, up to {max_tokens} tokens, temperature 1 (median of {runs})")
    print(f"{'mode (forced Write call)':34s} {'tokens':>7s} {'tok/s':>9s} {'ratio':>7s}")
    base = None
    modes = [
        ("unconstrained", None),
        ("constrained, budget far off", 100 * max_tokens),
        ("constrained, closing in last 64", max_tokens),
    ]
    for label, budget in modes:
        rates, counts = [], []
        for run in range(runs):
            mx.random.seed(run)
            processors = [CallProcessor(rendered.constraint, budget)] if budget else None
            for response in stream_generate(
                loaded.model,
                loaded.tokenizer,
                prompt,
                max_tokens=budget or max_tokens,
                sampler=make_sampler(1.0),
                logits_processors=processors,
            ):
                last = response
                if response.generation_tokens >= max_tokens:
                    break
            rates.append(last.generation_tps)
            counts.append(last.generation_tokens)
        rate = statistics.median(rates)
        base = base or rate
        print(f"{label:34s} {statistics.median(counts):7.0f} {rate:9.1f} {rate / base:6.2f}x")


def main(argv: list[str] | None = None) -> None:
    from server.model.loading import load_model
    from server.testing.wide_vocab import build_wide_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="model folder (default: the tiny wide-vocabulary model)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    cache = Path.home() / ".cache" / "mlxctl-bench"
    model_dir = Path(args.model) if args.model else build_wide_model(cache / "tiny-wide-vocab")
    loaded = load_model(str(model_dir))
    tools = fixture_tools()
    print(f"model {model_dir} ({len(loaded.tokenizer.vocab)} tokens), backend {loaded.backend}")
    compile_table(loaded.tokenizer, tools, args.repeat)
    mask_table(loaded.tokenizer, tools)
    decode_table(loaded, tools, args.max_tokens, args.runs)


if __name__ == "__main__":
    main()
