"""Speculative decoding with a draft model, in process: decode tok/s of the lone-sequence decode
with a draft model against plain decoding, and what `auto` makes of each draft.

    uv run python bench/draft_model.py [--layers 8] [--hidden 256] [--tokens 256]

Random weights give no real draft, so two stand-ins: the target as its own draft (every draft
accepted, each draft forward as dear as the target's) and a 1-layer draft of other weights
(cheap; tiny random models soon repeat their last token, so it agrees with the target far more
often than a real draft would). `draft` always drafts 4; `auto` must never come out slower than
plain (it should not draft with the dear one at all). Greedy replies must be identical.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "def area(width, height):\n    return width * height\n\n" * 8


def run(loaded, prompt, steps, mode=None, draft=None):
    """(tokens, tok/s, drafts accepted / drafted) of one decode."""
    from server.model.draft import weight_ratio
    from server.speculative.draft_model import DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting
    from tests.server.speculative.test_solo_drafting import decode

    drafting = None
    if mode:
        costs = CostModel(weight_ratio(draft.model, loaded.model))
        drafting = Drafting(mode, prompt, costs, source=DraftModel(draft.model, prompt))
    started = time.perf_counter()
    tokens, _, _ = decode(loaded, prompt, steps, drafting=drafting)
    seconds = time.perf_counter() - started
    record = drafting.record if drafting else None
    accepted = record.accepted / record.drafted if record and record.drafted else None
    return tokens, len(tokens) / seconds, accepted


def main(argv: list[str] | None = None) -> int:
    from server.model.loading import load_model
    from tests.conftest import tiny_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    target = load_model(str(tiny_model(layers=args.layers, hidden=args.hidden)))
    small = load_model(str(tiny_model(seed=1, layers=1)))
    prompt = target.tokenizer.encode(PROMPT)
    cases = [
        ("target as its own draft", target, "draft"),
        ("target as its own draft", target, "auto"),
        ("1-layer draft, other weights", small, "draft"),
        ("1-layer draft, other weights", small, "auto"),
    ]
    run(target, prompt, 16)  # warm
    print(
        f"\ntiny qwen2 target ({args.layers} layers, hidden {args.hidden}), {len(prompt)}-token "
        f"prompt, {args.tokens} tokens decoded greedily, median of {args.repeats} runs, each "
        "ratio against a plain run just before it\n"
    )
    print("| draft | mode | plain tok/s | tok/s | ratio | accepted | identical |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, draft, mode in cases:
        plains, speeds, ratios, rates, same = [], [], [], [], True
        for _ in range(args.repeats):
            plain, plain_tps, _ = run(target, prompt, args.tokens)
            tokens, tps, rate = run(target, prompt, args.tokens, mode, draft)
            plains.append(plain_tps)
            speeds.append(tps)
            ratios.append(tps / plain_tps)
            rates.append(rate)
            same = same and tokens == plain
        med = statistics.median
        accepted = f"{rates[-1]:.0%}" if rates[-1] is not None else "- (none drafted)"
        print(
            f"| {name} | {mode} | {med(plains):.1f} | {med(speeds):.1f} | {med(ratios):.2f}x "
            f"| {accepted} | {'yes' if same else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
