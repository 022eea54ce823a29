"""A prompt prefilled chunk by chunk between batch decode steps (generation thread only).

The prefill runs outside mlx-lm's BatchGenerator, on the request's own cache exactly as when it
runs alone: plain causal attention (no padding mask, measured 1.8x faster on MLX CUDA), and
exact checkpoints stored on the way. The sequence then joins the batch with its last token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.engine.job import Generation, Job
from server.engine.runner import Runner

MIN_SHARED = 64  # a shared uncached prefix shorter than this is cheaper to prefill twice
# A reply decoding this long stores its prompt's held end state (for a crash, a retry).
HOLD_S = 2.0


@dataclass
class PrefillTask:
    job: Job
    run: Generation
    max_tokens: int
    estimate: int  # admitted KV bytes
    end: int  # where decoding starts: the prompt but its last token
    stops: list[int]  # checkpoints to store on the way
    pos: int = 0
    stored: set[int] = field(default_factory=set)
    end_later: bool = False  # the trimmable end state: stored off the reply's path (`end_due`)
    held: list[Any] | None = None  # the cache holding that state meanwhile

    @classmethod
    def start(cls, runner: Runner, job: Job, max_tokens: int, estimate: int) -> PrefillTask:
        """Look the prompt up in the prefix cache now (earlier prompts may just have stored a
        state it extends) and plan its checkpoints."""
        from server.engine.prefill import checkpoints
        from server.model.kv_state import trimmable_at

        rendered = job.rendered
        tokens = rendered.tokens
        prompt_cache, n_cached = runner.cache_for(tokens, rendered.images)
        end = len(tokens) - 1
        stops = checkpoints(prompt_cache, n_cached, end, rendered.system_len, rendered.turn_start)
        # Trimmable: the prompt's state serves every shorter prefix at once. Not past a
        # turn-start checkpoint already held (a retry): an end state would replace it.
        at_end = not stops and n_cached < end and not 0 < rendered.turn_start <= n_cached
        stops = [end] if at_end else stops
        # Stored off the first token's path where the cache stays trimmable as the reply grows.
        end_later = at_end and trimmable_at(prompt_cache, end + max_tokens + 1)
        # Checkpoints stored on the way: the final state is not worth storing again.
        run = Generation(prompt_cache, n_cached, checkpointed=bool(stops))
        return cls(job, run, max_tokens, estimate, end, stops, pos=n_cached, end_later=end_later)

    @property
    def n_cached(self) -> int:
        return self.run.n_cached

    @property
    def done(self) -> bool:
        return self.pos >= self.end

    def advance(self, runner: Runner, step: int) -> None:
        """One chunk of at most `step` tokens, storing a checkpoint where it ends on one."""
        from server.engine.prefill import embedder_for, prefill_chunk

        tokens = self.job.rendered.tokens
        embed = embedder_for(runner.loaded, self.job.rendered)
        pos = prefill_chunk(
            runner.loaded.model, self.cache, tokens, self.pos, self.end, step, self.stops, embed
        )
        self.reached(runner, pos)

    def queue(self, runner: Runner, step: int) -> int:
        """Build the next chunk's forward on the current stream, unevaluated (the caller evaluates
        the cache, then calls `reached`); returns where it ends."""
        from server.engine.prefill import chunk_end, embedder_for, queue_chunk

        nxt = chunk_end(self.pos, self.end, step, self.stops)
        embed = embedder_for(runner.loaded, self.job.rendered)
        queue_chunk(runner.loaded.model, self.cache, self.job.rendered.tokens, self.pos, nxt, embed)
        return nxt

    def reached(self, runner: Runner, pos: int) -> None:
        """The cache holds exactly `pos` tokens now: a checkpoint there is stored."""
        self.pos = pos
        if self.pos in self.stops and not (self.end_later and self.pos == self.end):
            self.store(runner, self.cache)

    @property
    def cache(self) -> list[Any]:
        cache = self.run.prompt_cache
        assert cache is not None, "a prompt prefills into its own cache"
        return cache

    def store(self, runner: Runner, cache: list[Any] | None) -> None:
        """Keep the state at `pos` (a trimmable cache may hold more: the store trims it)."""
        tokens = self.job.rendered.tokens
        system = self.pos == self.job.rendered.system_len and self.pos < self.end
        runner.store(tokens[: self.pos], cache, kind="system" if system else "prompt")
        self.stored.add(self.pos)

    def shares_unfinished(self, tokens: list[int]) -> int:
        """How many tokens another prompt shares with this one and should wait for: a long
        uncached prefix whose checkpoint this prefill has not stored yet (0: none)."""
        shared = _common_prefix(tokens, self.job.rendered.tokens)
        if shared - self.n_cached < MIN_SHARED:  # what waiting would save: the uncached part
            return 0
        # This prompt's checkpoints at or below `shared` that the other could start from.
        useful = [b for b in self.stops if b <= shared]
        if self.end <= shared or not useful:
            useful = self.stops[-1:] or [self.end]  # a trimmable state, an identical retry
        return 0 if all(b in self.stored for b in useful) else shared

    def keep_end(self, runner: Runner, now: bool) -> bool:
        """Store the end state now (True), or hold its cache until `end_due`."""
        if now:
            self.store(runner, self.run.prompt_cache)
        else:
            self.held = self.run.prompt_cache
        return now

    def end_due(self, now: float) -> bool:
        """Whether the held end state is stored now: its reply has ended, or has decoded for
        HOLD_S. A short reply then decodes with no copy in its way."""
        first = self.run.first_token_at
        return self.job.done or (first is not None and now - first >= HOLD_S)

    def store_held(self, runner: Runner) -> None:
        self.store(runner, self.held)
        self.held = None

    def keep_partial(self, runner: Runner) -> int:
        """A prefill cut short keeps what it computed (exactly `pos` tokens) for a retry."""
        if self.pos <= self.n_cached:
            return 0
        runner.store(self.job.rendered.tokens[: self.pos], self.run.prompt_cache)
        return self.pos


def store_held(
    runner: Runner, held: list[PrefillTask], due: list[PrefillTask]
) -> list[PrefillTask]:
    """Store the end states of `due`; returns the tasks of `held` still holding one."""
    for task in due:
        task.store_held(runner)
    return [t for t in held if t.held is not None]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
