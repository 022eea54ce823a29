"""The drafting policy replayed on real turns against a measured cost table, no model run.

    uv run python bench/draft_policy.py [--turns-file F] [--tokenizer DIR] [--costs moe|dense8]

`auto`'s choices (server.speculative.session.Drafting over copy drafts) are taken token by token
on the speculative bench's turns (their replies are known text: the copies a real reply would
find), and each cycle is charged what the worker measured for a verify of that size on a GPU
(`/v1/status` `speculative.cost_ratios`, the H100 runs in the README). The output is the speedup
over plain decoding that the choices would give at those costs, per turn kind, beside `copy`
(always drafting its longest): a way to compare policies in seconds, not a device's measure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# A verify cycle feeding n tokens over a plain cycle, as the workers measured them on an H100
# (the bf16 8B and the 4-bit 30B-A3B MoE; between measured sizes the dearer neighbour counts).
# 0: a switch out of plain decoding or back, beyond a plain cycle (a verify's graph build that
# nothing overlaps: 3-7 ms of a 12-22 ms cycle there).
COSTS = {
    "dense8": {0: 0.25, 1: 1.0, 5: 1.12, 9: 1.23, 13: 1.34, 17: 1.63},
    "moe": {0: 0.35, 1: 1.0, 5: 1.22, 9: 1.39, 13: 1.50, 17: 1.64},
}


def fixed_costs(table: dict[int, float]):
    """A CostModel whose ratios and switch cost are a measured table (the replay learns none)."""
    from server.speculative.policy import CostModel

    class FixedCosts(CostModel):
        def ratio(self, fed: int, context: int) -> float:
            return table[min(f for f in table if f >= fed)]

        def switch(self, context: int) -> float:
            return table[0]

    return FixedCosts()


def learned_costs(compile_cycles: float, second: float = 0.0):
    """The worker's own CostModel, learning from the cycles the replay charges, where a size's
    first cycle also holds `compile_cycles` plain cycles of one-time work (MLX CUDA compiles a
    verify size's kernels on its first use: seconds against a 12-35 ms cycle), and its second
    `second` (an H100's longest verify was priced 3.8 plain cycles where it cost 2.6)."""
    from server.speculative.policy import CostModel

    class LearnedCosts(CostModel):
        cycles: dict[int, int] = {}

        def record(self, fed: int, context: int, seconds: float) -> None:
            if fed > 1:
                seen = self.cycles[fed] = self.cycles.get(fed, 0) + 1
                seconds += compile_cycles if seen == 1 else second if seen == 2 else 0.0
            super().record(fed, context, seconds)

    costs = LearnedCosts()
    costs.cycles = {}
    return costs


def replay(
    prompt: list[int], reply: list[int], mode: str, costs, policy=None, guard=None, views=()
) -> dict:
    """Decode `reply` as the policy would, charging each cycle the table's cost (`costs`): plain
    cycles' cost, the charged cost, verify steps and the tokens they gave. `policy` is the cost
    model the choices read (default: the table itself), `guard` the worker's speed guard (both
    last across a worker's turns); `views`: the prompt's pieces as the model writes them back
    (server.prompt.copy_views), which copies read too."""
    from server.speculative.session import Drafting

    drafting = Drafting(mode, prompt, policy or costs, guard, views=views)
    spent, verifies, verified, drafting_now = 0.0, 0, 0, False
    drafting.delivered([reply[0]])  # the first token comes from the prefill
    at = 1
    while at < len(reply):
        context = len(prompt) + at
        k = drafting.length(context, len(reply) - at - 1) if drafting.guessing else 0
        drafts = drafting.drafts(reply[at], k) if k else []
        if drafts:
            right = 0
            while right < len(drafts) and at + 1 + right < len(reply):
                if drafts[right] != reply[at + 1 + right]:
                    break
                right += 1
            drafting.verified(drafts[:right], len(drafts))
            cost = costs.ratio(len(drafts) + 1, context) + (0 if drafting_now else costs.switch(0))
            drafting.cycle(spent, len(drafts) + 1, context, True, right + 1, spent + cost)
            spent, drafting_now = spent + cost, True
            verifies, verified, at = verifies + 1, verified + 1 + right, at + 1 + right
            continue
        if not k:  # a step that drafted nothing after all delivered its token in drafts()
            drafting.delivered([reply[at]])
        cost = 1.0 + (costs.switch(0) if drafting_now else 0)
        drafting.cycle(spent, 1, context, False, 1, spent + cost)
        spent, drafting_now, at = spent + cost, False, at + 1
    plain = float(len(reply) - 1)
    return {"plain": plain, "spent": spent, "verifies": verifies, "verified": verified}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns-file", help="turns dumped by bench/speculative.py --dump-turns")
    parser.add_argument("--tokenizer", default=None, help="a model folder (default: the demo)")
    parser.add_argument("--max-tokens", type=int, default=768, help="replies are cut here")
    parser.add_argument("--costs", choices=sorted(COSTS), default=None, help="default: all")
    parser.add_argument("--per-kind", type=int, default=0, help="the first N turns of each kind")
    parser.add_argument(
        "--learn-compile",
        type=float,
        default=None,
        metavar="CYCLES",
        help="the policy learns its costs as a worker does, a size's first cycle CYCLES dearer",
    )
    parser.add_argument(
        "--second-compile",
        type=float,
        default=0.0,
        metavar="CYCLES",
        help="with --learn-compile: a size's second cycle this many plain cycles dearer too",
    )
    parser.add_argument(
        "--compare-copy-views",
        action="store_true",
        help="also copies of the prompt as it is only (without server.prompt.copy_views)",
    )
    parser.add_argument(
        "--numbered-reads",
        action="store_true",
        help="tool results show the file as Claude Code's Read does (a line number and a tab)",
    )
    args = parser.parse_args(argv)

    from mlx_lm.utils import load_tokenizer

    from bench import speculative
    from server.prompt.copy_views import CopyViews
    from server.prompt.segments import SegmentEncoder

    turns = (
        [tuple(t) for t in json.loads(Path(args.turns_file).read_text())]
        if args.turns_file
        else speculative.turns()
    )
    tokenizer = load_tokenizer(Path(args.tokenizer or demo_model()))
    encoder = SegmentEncoder(tokenizer)  # the worker's: the views are of its pieces
    views_of = CopyViews(encoder, json_calls=True)  # the turns' replies are Hermes JSON calls
    rendered = []
    for kind, _, messages, reply in turns:
        plain = [{**m, "content": m.get("content") or ""} for m in messages]
        if args.numbered_reads:
            plain = [speculative.numbered(m) for m in plain]
        prompt = tokenizer.apply_chat_template(
            plain, tools=speculative.tools_for(plain), add_generation_prompt=True, tokenize=False
        )
        reply_tokens = tokenizer.encode(reply, add_special_tokens=False)[: args.max_tokens]
        tools = {t["function"]["name"] for t in speculative.tools_for(plain)}
        views = views_of(prompt, tools=True, patches="apply_patch" in tools)
        rendered.append((kind, encoder.encode(prompt), reply_tokens, views))

    if args.per_kind:
        seen: dict[str, int] = {}
        kept = []
        for turn in rendered:  # the first --per-kind turns of each kind, in order
            if seen.get(turn[0], 0) < args.per_kind:
                seen[turn[0]] = seen.get(turn[0], 0) + 1
                kept.append(turn)
        rendered = kept
    learning = args.learn_compile is not None
    print("\nspeedup over plain decoding at the table's costs (plain cycles / charged cycles)")
    if learning:
        said = f"the policy learns its costs, a size's first cycle {args.learn_compile:g} dearer"
        if args.second_compile:
            said += f", its second {args.second_compile:g}"
        print(said)
    modes = [("auto", True), ("copy", True)]
    if args.compare_copy_views:  # copies of the raw prompt only, as before the views
        modes += [("auto", False), ("copy", False)]
    names = [f"{mode}{'' if views else ' raw'}" for mode, views in modes]
    head = " | ".join(f"{n} | {n} t/v" for n in names)
    print(f"\n| costs | turn kind | turns | reply tokens | {head} |")
    print("| --- | --- | ---: | ---: | " + " | ".join(["---: | ---:"] * len(modes)) + " |")
    for name in [args.costs] if args.costs else sorted(COSTS):
        compiles = (args.learn_compile, args.second_compile)
        runs = [worker_runs(rendered, mode, COSTS[name], compiles, views)
                for mode, views in modes]  # fmt: skip
        for kind in dict.fromkeys(turn[0] for turn in rendered):
            mine = [i for i, turn in enumerate(rendered) if turn[0] == kind]
            cells = []
            for run in runs:
                done = [run[i] for i in mine]
                speed = sum(x["plain"] for x in done) / sum(x["spent"] for x in done)
                verifies = sum(x["verifies"] for x in done)
                per = sum(x["verified"] for x in done) / max(1, verifies)
                cells += [f"{speed:.2f}x", f"{per:.2f}" if verifies else "-"]
            tokens = statistics.median(len(rendered[i][2]) for i in mine)
            print(f"| {name} | {kind} | {len(mine)} | {tokens:.0f} | " + " | ".join(cells) + " |")
    return 0


def worker_runs(
    rendered: list, mode: str, table: dict, compiles: tuple[float | None, float], views: bool
) -> list:
    """Every turn, in order, through one worker's state: its cost model (the table itself, or
    learning with `compiles`: a size's first and second cycles' extra plain cycles) and its speed
    guard, as the bench's workers keep them;
    `views`: copies read the prompt as the model writes it back too."""
    from server.speculative.guard import SpeedGuard

    charge = fixed_costs(table)
    first, second = compiles
    policy = learned_costs(first, second) if first is not None else charge
    guard = SpeedGuard()
    return [
        replay(p, r, mode, charge, policy, guard, v if views else ()) for _, p, r, v in rendered
    ]


def demo_model() -> Path:
    from mlxctl import paths

    return paths.models_dir() / "demo"


if __name__ == "__main__":
    raise SystemExit(main())
