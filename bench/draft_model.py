"""Speculative decoding with a draft model, in process: decode tok/s of the lone-sequence decode
with a draft model against plain decoding, and what `auto` makes of each draft; a conversation's
second turn with the draft's cache of the first kept (reuse) or not; copies of the context
stacked on the draft on a copy-heavy turn.

    uv run python bench/draft_model.py [--layers 8] [--hidden 256] [--tokens 256]
        [--steps drafts,reuse,stack] [--context 3000]

Random weights give no real draft, so two stand-ins: the target as its own draft (every draft
accepted, each draft forward as dear as the target's) and a 1-layer draft of other weights
(cheap; tiny random models soon repeat their last token, so it agrees with the target far more
often than a real draft would). `draft` always drafts 4; `auto` must never come out slower than
plain (it should not draft with the dear one at all). Greedy replies must be identical.

Reuse: a first turn of about --context tokens drafts and ends (its draft cache kept or not); the
second turn (the first, its reply and a new message) then times its first drafted token from the
start of its decode (the target's prompt is in its cache already, as a prefix-cache hit leaves
it) and its tok/s. Stacking: the reply is forced to re-type the prompt's code with a few changes
(an `Edit`); the draft cannot see that (never right), or is told it by position (right
whenever the text is; cheap, as a small draft that copies well); `draft` alone against copies
stacked on it.
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


def tiny_model(**kwargs) -> Path:
    """A cached tiny random-weight model (the tests' cache; no pytest needed)."""
    import os

    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    key = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items())) or "default"
    return build_tiny_model(root / f"tiny-{key}", **kwargs)


def long_code(tokenizer, tokens: int) -> list[int]:
    """A file of functions of about `tokens` tokens."""
    lines: list[str] = []
    i = 0
    while len(tokenizer.encode("".join(lines))) < tokens:
        lines += [f"def f{i}(x):\n    return x * {i} + f{max(0, i - 1)}(x)\n\n" for _ in range(1)]
        i += 1
    return tokenizer.encode("".join(lines))


def timed_turn(target, draft, prompt, steps, store, stack=True, processors=()):
    """One reply decoded alone with `draft`: (tokens, seconds to the first drafted token, tok/s,
    its record, the draft's source). The target's prompt is prefilled before the clock starts."""
    import mlx.core as mx
    from mlx_lm.generate import StopSequences
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.solo_decode import SoloDecode
    from server.speculative.draft_model import DRAFT_TOKENS, DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    cache = make_prompt_cache(target.model)
    for at in range(0, len(prompt) - 1, 2048):
        target.model(mx.array([prompt[at : min(at + 2048, len(prompt) - 1)]]), cache=cache)
        mx.eval([c.state for c in cache])
    started = time.perf_counter()
    source = None
    drafting = None
    if draft is not None:
        source = DraftModel(draft, prompt, store=store, chain=DRAFT_TOKENS, stack=stack)
        drafting = Drafting("draft", prompt, CostModel(), source=source)
    run = SoloDecode(
        target.model,
        cache,
        prompt,
        len(prompt) - 1,
        max_tokens=steps,
        sampler=lambda logprobs: logprobs.argmax(axis=-1),
        logits_processors=list(processors),
        stop_sequences=StopSequences([]),
        drafting=drafting,
    )
    out: list = []
    first = None
    while not out or out[-1].finish_reason is None:
        out += run.next()
        if first is None and drafting is not None and drafting.record.verify_steps:
            first = time.perf_counter() - started
    seconds = time.perf_counter() - started
    run.close()
    record = drafting.record if drafting is not None else None
    return [r.token for r in out], first, len(out) / seconds, record, source


class Knows:
    """A draft model that is told the forced reply by position (right wherever the text is)."""

    def __init__(self, model, text: list[int], start: int):
        self.model, self.text, self.start = model, text, start

    def __call__(self, inputs, cache=None):
        import mlx.core as mx

        from server.model.kv_state import cache_len

        offset = cache_len(cache)
        logits = self.model(inputs, cache=cache)
        n, vocab = inputs.shape[1], logits.shape[-1]
        # Row i predicts the token at offset + i + 1.
        wanted = [offset + i + 1 - self.start for i in range(n)]
        ids = [self.text[w] if 0 <= w < len(self.text) else -1 for w in wanted]
        bias = (mx.arange(vocab)[None] == mx.array(ids)[:, None]) * 1e4
        return logits + bias[None].astype(logits.dtype)

    def __getattr__(self, name):
        return getattr(self.model, name)


def reuse_step(target, small, args) -> None:
    from server.speculative.draft_store import DraftCaches

    tokenizer = target.tokenizer
    first = long_code(tokenizer, args.context)
    more = tokenizer.encode("\n\nNow add one more function the same way.\n")
    rows: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    same = True
    for _ in range(args.repeats):
        store = DraftCaches(4, 1 << 32)
        reply, _, _, _, _ = timed_turn(target, small.model, first, 32, store)
        second = first + reply + more
        for reuse in (False, True):
            tokens, ttfd, tps, record, _ = timed_turn(
                target, small.model, second, args.tokens, store if reuse else None
            )
            rows[reuse].append((ttfd or 0.0, tps, record.draft_prefilled))
            plain = timed_turn(target, None, second, args.tokens, None)[0]
            same = same and tokens == plain
    med = statistics.median
    print(
        f"\nsecond turn of a {len(first)}-token first turn (its 32-token reply and a new message: "
        f"{len(first) + 32 + len(more)} tokens), {args.draft_layers}-layer draft (hidden "
        f"{args.draft_hidden}), `draft` mode, median of "
        f"{args.repeats}\n"
    )
    print("| draft cache | draft prefilled | first drafted token | tok/s | identical |")
    print("| --- | ---: | ---: | ---: | --- |")
    for reuse in (False, True):
        ttfd = med(r[0] for r in rows[reuse])
        tps = med(r[1] for r in rows[reuse])
        filled = rows[reuse][-1][2]
        print(
            f"| {'kept' if reuse else 'none'} | {filled} | {ttfd * 1000:.1f} ms | {tps:.1f} "
            f"| {'yes' if same else 'NO'} |"
        )
    off, on = rows[False], rows[True]
    ratio_first = med(a[0] / b[0] for a, b in zip(off, on, strict=True) if b[0])
    ratio_tps = med(b[1] / a[1] for a, b in zip(off, on, strict=True))
    print(f"\nkept vs none: first drafted token {ratio_first:.2f}x sooner, tok/s {ratio_tps:.2f}x")


def stack_step(target, small, args) -> None:
    from server.testing.forcing import ForceTokens

    tokenizer = target.tokenizer
    prompt = long_code(tokenizer, 600)
    code = tokenizer.decode(prompt)
    edited = code.replace("x * 3 ", "x * 33 ").replace("f7(x)", "g7(x)")
    text = tokenizer.encode(edited)[: args.tokens]
    end = min(tokenizer.eos_token_ids)

    def force():
        return [ForceTokens(text, end)]

    steps = len(text)
    drafts = [
        ("never right", small.model),
        ("told the reply", Knows(small.model, text, len(prompt))),
    ]
    print(
        f"\na copy-heavy turn: {len(prompt)}-token prompt of code, {steps}-token reply re-typing "
        f"it with 2 changes, `draft` mode, median of {args.repeats}\n"
    )
    print("| draft | source | tok/s | vs plain | tokens/verify | accepted | draft forwards "
          "| identical |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    med = statistics.median
    for name, draft in drafts:
        results: dict[str, list] = {"plain": [], "draft": [], "draft+copy": []}
        same = True
        for _ in range(args.repeats):
            plain, _, plain_tps, _, _ = timed_turn(target, None, prompt, steps, None, True, force())
            results["plain"].append((plain_tps, None, 0))
            for label, stack in (("draft", False), ("draft+copy", True)):
                counting = Counting(draft)
                tokens, _, tps, record, _ = timed_turn(
                    target, counting, prompt, steps, None, stack, force()
                )
                same = same and tokens == plain
                results[label].append((tps, record, counting.calls))
        base = med(r[0] for r in results["plain"])
        for label, runs in results.items():
            tps = med(r[0] for r in runs)
            record = runs[-1][1]
            verify = f"{record.tokens_per_step:.2f}" if record else "-"
            rate = f"{record.accepted / record.drafted:.0%}" if record and record.drafted else "-"
            calls = str(runs[-1][2]) if record else "-"
            print(
                f"| {name} | {label} | {tps:.1f} | {tps / base:.2f}x | {verify} | {rate} "
                f"| {calls} | {'yes' if same else 'NO'} |"
            )


class Counting:
    """Counts the draft's forwards."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, inputs, cache=None):
        self.calls += 1
        return self.model(inputs, cache=cache)

    def __getattr__(self, name):
        return getattr(self.model, name)


def main(argv: list[str] | None = None) -> int:
    from server.model.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", default="drafts,reuse,stack")
    ap.add_argument("--context", type=int, default=3000, help="the reuse step's first turn")
    ap.add_argument("--draft-layers", type=int, default=1)
    ap.add_argument("--draft-hidden", type=int, default=64)
    args = ap.parse_args(argv)
    steps = set(args.steps.split(","))

    target = load_model(str(tiny_model(layers=args.layers, hidden=args.hidden)))
    shape = {"layers": args.draft_layers} | (
        {"hidden": args.draft_hidden} if args.draft_hidden != 64 else {}
    )
    small = load_model(str(tiny_model(seed=1, **shape)))
    prompt = target.tokenizer.encode(PROMPT)
    cases = [
        ("target as its own draft", target, "draft"),
        ("target as its own draft", target, "auto"),
        ("1-layer draft, other weights", small, "draft"),
        ("1-layer draft, other weights", small, "auto"),
    ]
    timed_turn(target, small.model, prompt, 16, None)  # warm
    if "reuse" in steps:
        reuse_step(target, small, args)
    if "stack" in steps:
        stack_step(target, small, args)
    if "drafts" not in steps:
        return 0
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
