"""What running one verify ahead saves: verify cycles with the scheduler's per-token work stood
in for, one after the other (the next forward built after the tokens are handled) against
pipelined (the next forward queued before), on this device, in process.

    uv run python bench/verify_pipeline.py [MODEL_DIR] [--context 2000] [--k 4] [--cycles 40]

Every draft is accepted (a forcing processor, server/testing/forcing.py), so each cycle feeds and
keeps 1 + k tokens and the cache grows as the worker's does. The handling stands in for the
scheduler's work per delivered token (detokenizer, parser, events): `sleep` is host time that
leaves the device alone (a GPU's case), `spin` is Python work that shares the cores (the CPU's
case, where MLX runs the forward on the same cores). Without MODEL_DIR: the tiny test model.
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
    from mlx_lm.models.cache import make_prompt_cache

    from server.model.loading import load_model
    from server.speculative.verify import Launched
    from server.testing.forcing import ForceTokens

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--context", type=int, default=2000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, taken in turn")
    args = ap.parse_args()
    if args.model is None:
        from tests.conftest import tiny_model

        args.model = str(tiny_model(family="qwen2"))
    model = load_model(args.model).model
    k = args.k
    stream = [(7 * i) % 900 + 10 for i in range(args.context + (args.cycles + 4) * (k + 1) * 2)]

    def cycles(pipelined: bool, handle) -> float:
        """Median seconds per cycle over `--cycles` cycles after two untimed ones."""
        cache = make_prompt_cache(model)
        for start in range(0, args.context, 512):
            model(mx.array([stream[start : min(start + 512, args.context)]]), cache=cache)
            mx.eval([c.state for c in cache])
        forcing = ForceTokens(stream[args.context + 1 :], 0)
        at = args.context

        def launch(at: int) -> Launched:
            return Launched(model, cache, stream[at], stream[at + 1 : at + 1 + k], hidden=False)

        def settle(launched: Launched):
            return launched.settle(
                sampler=lambda lp: mx.argmax(lp, axis=-1),
                processors=[forcing],
                context=None,
                deliver=lambda token: False,
            )

        spent = []
        launched = launch(at) if pipelined else None
        for i in range(args.cycles + 2):
            began = time.perf_counter()
            step = settle(launched) if launched is not None else settle(launch(at))  # pipelined
            assert step.accepted == k, step
            at += k + 1
            if pipelined:
                launched = launch(at)
            for _ in step.delivered:
                handle()
            if i >= 2:
                spent.append(time.perf_counter() - began)
        return statistics.median(spent)

    def sleep(ms: float):
        return lambda: time.sleep(ms / 1000)

    def spin(ms: float):
        def run():
            end = time.perf_counter() + ms / 1000
            while time.perf_counter() < end:
                pass

        return run

    none = cycles(False, lambda: None)
    print(f"\n{args.model}, context {args.context}, 1 + {k} tokens a verify, all accepted;")
    print(
        f"median of {args.cycles} cycles, median of {args.rounds} runs; "
        f"a cycle with no handling: {1000 * none:.2f} ms\n"
    )
    print("| handling per token | one after the other ms | pipelined ms | pipelined/serial |")
    print("| --- | ---: | ---: | ---: |")
    for name, make in (("sleep", sleep), ("spin", spin)):
        for ms in (0.0, 0.5, 2.0):
            runs: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):  # in turn: a busy spell of the machine hits both
                for pipelined in (False, True):
                    runs[pipelined].append(cycles(pipelined, make(ms)))
            serial, ahead = statistics.median(runs[False]), statistics.median(runs[True])
            print(
                f"| {name} {ms:.2f} ms | {1000 * serial:.2f} | {1000 * ahead:.2f} | "
                f"{ahead / serial:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
