"""Chunked prefill with exact checkpoints, and the sampler (generation thread only).

Like mlx-lm's `generate_step` prefill loop, but a chunk also ends at each checkpoint, where the
cache holds exactly that many tokens: caches that cannot be trimmed back (ArraysCache,
RotatingKVCache past its window) are reusable only from such exact states.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_STEP = 2048  # mlx-lm's prefill_step_size


def checkpoints(
    cache: list[Any], n_cached: int, end: int, system_len: int, turn_start: int = 0
) -> list[int]:
    """Where to snapshot `cache` while it grows from `n_cached` to `end` tokens: nowhere when
    it stays trimmable (its final state serves every prefix), else the end of the system+tools
    prefix (new sessions start there) and the end of the prompt (the next turn does), or the
    start of the reply's turn where the next may render it differently (`Rendered.turn_start`)."""
    from server.model.kv_state import trimmable_at

    if end <= 0 or trimmable_at(cache, end):
        return []
    last = turn_start if 0 < turn_start <= end else end
    return sorted({n for n in (system_len, last) if n_cached < n <= end})


# embed(cache, pos, end): runs tokens[pos:end] into cache with the prompt's images; False when
# that chunk needs none (token ids alone serve).
Embedder = Callable[[list[Any], int, int], bool]


def embedder_for(loaded: Any, rendered: Any) -> Embedder | None:
    """How a prompt with images feeds them to the model (None: token ids alone serve)."""
    vision = getattr(loaded, "vision", None)
    if not rendered.images or vision is None:
        return None
    tokens, spans = rendered.tokens, rendered.images
    return lambda cache, pos, end: vision.run_chunk(loaded.model, cache, tokens, spans, pos, end)


def prefill_chunk(
    model: Any,
    cache: list[Any],
    tokens: list[int],
    pos: int,
    end: int,
    step: int,
    stops=(),
    embed: Embedder | None = None,
) -> int:
    """Run one chunk of `tokens[pos:end]` into `cache`, at most `step` tokens and never past the
    next of `stops`; returns the new position (the cache then holds exactly that many)."""
    import mlx.core as mx
    from mlx_lm.generate import generation_stream

    nxt = chunk_end(pos, end, step, stops)
    with mx.stream(generation_stream):
        queue_chunk(model, cache, tokens, pos, nxt, embed)
        mx.eval([c.state for c in cache])
    mx.clear_cache()
    return nxt


def chunk_end(pos: int, end: int, step: int, stops=()) -> int:
    """Where a chunk from `pos` ends: at most `step` tokens, never past `end` or the next stop."""
    return min([pos + step, end, *(s for s in stops if s > pos)])


def queue_chunk(
    model: Any, cache: list[Any], tokens: list[int], pos: int, nxt: int, embed: Embedder | None
) -> None:
    """Build `tokens[pos:nxt]`'s forward into `cache` on the current stream, unevaluated (an
    image's tower runs now: its rows are evaluated once and kept)."""
    import mlx.core as mx

    if embed is None or not embed(cache, pos, nxt):
        model(mx.array(tokens[pos:nxt])[None], cache=cache)


def prefill(
    model: Any,
    cache: list[Any],
    tokens: list[int],
    start: int,
    end: int,
    *,
    step: int | None = None,
    stops: Sequence[int] = (),
    on_chunk: Callable[[int], None] = lambda n: None,
    on_stop: Callable[[int], None] = lambda n: None,
    embed: Embedder | None = None,
) -> int:
    """Run `tokens[start:end]` through `model` into `cache`; `on_stop(n)` at each of `stops`,
    then `on_chunk(n)` after every chunk (it may raise to cut the prefill short: the cache then
    holds exactly `n` tokens). Returns `end`."""
    pos = start
    while pos < end:
        pos = prefill_chunk(model, cache, tokens, pos, end, step or DEFAULT_STEP, stops, embed)
        if pos in stops:
            on_stop(pos)
        on_chunk(pos)
    return end


def prefill_prompt(
    model: Any,
    cache: list[Any],
    tokens: list[int],
    n_cached: int,
    system_len: int,
    *,
    turn_start: int = 0,
    step: int | None,
    on_chunk: Callable[[int], None],
    store: Callable[[int, str], None],
    embed: Embedder | None = None,
) -> tuple[int, bool]:
    """Prefill a prompt but its last token (which decoding runs for the first logits) into
    `cache`, calling `store(n, kind)` at its checkpoints. Returns (where decoding starts,
    whether checkpoints were stored: then the final state is not worth keeping)."""
    end = max(len(tokens) - 1, n_cached)
    stops = checkpoints(cache, n_cached, end, system_len, turn_start)

    def on_stop(n: int) -> None:
        store(n, "system" if n == system_len and n < end else "prompt")

    prefill(
        model,
        cache,
        tokens,
        n_cached,
        end,
        step=step,
        stops=stops,
        on_chunk=on_chunk,
        on_stop=on_stop,
        embed=embed,
    )
    return end, bool(stops)


def sampler_for(s: Any):
    """mlx-lm's sampler for these `Sampling` settings, after seeding MLX's generator when a
    seed is given. Equal settings get the same sampler object: a batch whose members share one
    samples in one call instead of one per member."""
    import mlx.core as mx

    if s.seed is not None:
        mx.random.seed(s.seed)
    return _sampler(s.temperature, s.top_p if s.top_p < 1.0 else 0.0, s.top_k)


@functools.lru_cache(maxsize=64)
def _sampler(temperature: float, top_p: float, top_k: int):
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature, top_p=top_p, top_k=top_k)
