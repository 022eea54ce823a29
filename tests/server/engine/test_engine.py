"""The generation engine in-process, with a small test prefix cache plugged into its seam."""

from __future__ import annotations

import asyncio

import pytest

from server.api import serving
from server.engine.engine import Engine
from server.request import ChatRequest, Sampling
from server.settings import Settings
from server.testing.scripts import WEATHER_TOOL


class PrefixListCache:
    """Longest-common-prefix reuse over a list of stored KV states (the seam's contract)."""

    def __init__(self, loaded):
        self.model = loaded.model
        self.entries: list[tuple[list[int], list]] = []
        self.stores: list[tuple[int, int]] = []
        self.closed = False

    def lookup(self, tokens):
        from mlx_lm.models.cache import make_prompt_cache

        best, states = 0, None
        for stored, entry in self.entries:
            n = next(
                (i for i, (a, b) in enumerate(zip(stored, tokens, strict=False)) if a != b),
                min(len(stored), len(tokens)),
            )
            if n > best:
                best, states = n, entry
        if not best:
            return None, 0
        cache = make_prompt_cache(self.model)
        for layer, (keys, values) in zip(cache, states, strict=True):
            layer.state = (keys[..., :best, :], values[..., :best, :], best)
        return cache, best

    def store(self, tokens, prompt_cache, kind="prompt"):
        self.stores.append((len(tokens), prompt_cache[0].offset))
        states = [(c.keys[..., : c.offset, :], c.values[..., : c.offset, :]) for c in prompt_cache]
        self.entries.append((list(tokens), states))

    enabled = True

    def record_prefill(self, n_tokens, seconds):
        pass

    def prefetch(self, should_stop):
        pass

    def stats(self):
        return {"entries": len(self.entries)}

    def list_entries(self):
        return []

    def clear(self, tier):
        return 0

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def engine(scripted_model_path):
    path = str(scripted_model_path)
    engine = Engine(Settings(model=path, model_path=path), cache_factory=PrefixListCache)
    engine.start()
    engine.wait_ready(120)
    assert engine.ready, engine.load_error
    yield engine
    engine.stop()
    assert engine.cache.closed


def ask(engine, messages, seed=None, **kwargs):
    async def go():
        sampling = Sampling(temperature=0.0, seed=seed)
        request = ChatRequest(messages=messages, sampling=sampling, **kwargs)
        job = serving.submit(engine, request, await serving.prepare(engine, request))

        async def connected():
            return False

        result = await serving.collect(job, connected)
        # The reply goes out before store() runs; wait for the engine to finish the job.
        while not job.done:
            await asyncio.sleep(0.01)
        return result

    return asyncio.run(go())


def test_prefix_cache_seam_reuses_state_and_keeps_output(engine):
    paris = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = ask(engine, paris, tools=[WEATHER_TOOL])
    second = ask(engine, paris, tools=[WEATHER_TOOL])
    assert first.started.cached_tokens == 0
    # All but the last prompt token come from the cache; the reply is the same.
    assert second.started.cached_tokens == first.started.prompt_tokens - 1
    assert [(c.name, c.arguments) for c in second.calls] == [("get_weather", {"city": "Paris"})]
    assert [(c.name, c.arguments) for c in first.calls] == [("get_weather", {"city": "Paris"})]
    assert second.finished.usage.cached_tokens == second.started.cached_tokens
    # store() gets the prompt but its last token (the next prompt re-renders the reply from
    # there), of a cache that holds at least that.
    prompt = first.started.prompt_tokens
    assert [n for n, _ in engine.cache.stores] == [prompt - 1, prompt - 1]
    assert all(n <= offset for n, offset in engine.cache.stores)
    assert engine.cache.stats() == {"entries": 2}


@pytest.mark.parametrize("seed", [None, 7], ids=["batched", "alone"])
def test_a_logits_processor_steers_every_token_on_both_paths(engine, seed):
    """A factory's processor sees the fed-in token last and decides the sampled one."""
    import mlx.core as mx

    tokenizer = engine.loaded.tokenizer
    forced = tokenizer.encode(" Paris", add_special_tokens=False)[-1]
    seen: list[int] = []

    def force(tokens, logits):
        seen.append(int(tokens[-1].item()))
        return mx.where(mx.arange(logits.shape[-1]) == forced, 0.0, -mx.inf)[None]

    def factory(request, rendered, loaded):
        return force if request.max_tokens == 5 else None

    runner = engine.runner
    assert runner is not None
    defaults, runner.processor_factories = runner.processor_factories, [factory]
    try:
        hello = [{"role": "user", "content": "Say hello."}]
        reply = ask(engine, hello, max_tokens=5, seed=seed)
        untouched = ask(engine, hello, max_tokens=6, seed=seed)
    finally:
        runner.processor_factories = defaults
    assert reply.finished.usage.completion_tokens == 5
    assert reply.text == tokenizer.decode([forced] * 5)
    # First call: the prompt's last token; then each sampled token as it is fed back (decoding
    # runs one step ahead, so there may be one call past the last token).
    assert len(seen) in (5, 6) and set(seen[1:]) == {forced}
    assert untouched.text != reply.text


def test_a_factory_that_prepares_is_called_before_the_load_and_its_failure_costs_nothing(
    scripted_model_path,
):
    from server.model.loading import load_model

    path = str(scripted_model_path)
    calls: list[str] = []

    class Preparing:
        def prepare(self, model_path: str) -> None:
            calls.append(f"prepare {model_path}")
            raise OSError("the cache disk is gone")

        def __call__(self, loaded):
            calls.append("build")
            return PrefixListCache(loaded)

    def load(model_path: str):
        calls.append("load")
        return load_model(model_path)

    engine = Engine(Settings(model=path, model_path=path), load_fn=load, cache_factory=Preparing())
    engine.start()
    try:
        engine.wait_ready(120)
        assert engine.ready, engine.load_error
    finally:
        engine.stop()
    assert calls == [f"prepare {path}", "load", "build"]
