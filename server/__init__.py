"""The inference worker: OpenAI (Chat Completions, Responses) and Anthropic APIs over mlx-lm
(`python -m server --model M`).

    api/           HTTP on the event loop (app, admin routes, the protocol adapters); never MLX
    prompt/        a ChatRequest into token ids with the chat template (a pool thread)
    engine/        the one MLX thread: queue, scheduler, prefill, the two decode paths, lockstep,
                   watchdog; the scheduler calls down into runner.py, never up into the engine
    decoding/      the reply as it is decoded: parser, reasoning, logits processors, constrained/
    prefix_cache/  the KV cache behind seam.py (RAM and disk tiers, write-behind)
    model/         mlx-lm and MLX glue: loading, ranks, KV state, attention, tool parsers
    testing/       tiny random-weight models for tests and benchmarks (not in the wheel)

At the root: the entry points (`__main__`, `launch`, `serve`: the composition root), the shared
vocabulary (`settings`, `errors`, `request`, `metrics`) and the stdlib-only edge that `mlxctl`
imports (`contract`, `blas`, `atomic`, `model_ref`, `logfile`). Calls run down: api -> engine ->
prompt, decoding, prefix_cache (its seam) -> model -> the root's vocabulary.
"""
