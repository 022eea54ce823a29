"""A verify queued before its tokens are handled (server.speculative.pipeline), where the plan
changes in between: the reply ends on a token handed out (a stop sequence the scheduler finds, a
cancellation), another sequence arrives, or the sequence moves into the batch. Each time the
tokens and the cache are those of plain decoding, on a plain KV model, a hybrid (ArraysCache:
restored, not trimmed) and a sliding window (RotatingKVCache)."""

from __future__ import annotations

from tests.server.speculative.test_solo_drafting import PROMPT, REPLY, decode, forced, loaded

__all__ = ["loaded"]  # the module's fixture: each cache kind's tiny model


def drafting_run(loaded, prompt, steps, stop=()):
    """A SoloDecode drafting copies of a forced reply, greedily (the tokens are forced: the cache
    states are compared too)."""
    import mlx.core as mx
    from mlx_lm.generate import StopSequences
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.solo_decode import SoloDecode
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    cache = make_prompt_cache(loaded.model)
    loaded.model(mx.array(prompt[:-1])[None], cache=cache)
    return SoloDecode(
        loaded.model,
        cache,
        prompt,
        len(prompt) - 1,
        max_tokens=steps,
        sampler=lambda logprobs: logprobs.argmax(axis=-1),
        logits_processors=[forced(loaded)],
        stop_sequences=StopSequences([list(s) for s in stop]),
        drafting=Drafting("copy", prompt, CostModel()),
    )


def until_queued(run, out: list, loaded) -> None:
    """Step until a verify is queued well into the reply (a sliding window of 64 tokens has
    room for drafts only at first)."""
    at_least = 1 if loaded.config["model_type"] == "gemma3_text" else 20
    while len(out) < at_least or run._verifies.launched is None:
        out += run.next()
        assert out[-1].finish_reason is None, "the reply ended before a verify was queued"


def same_state(a_cache, b_cache, n: int) -> None:
    """Both caches hold `n` tokens with the same state (KV rows up to `n`, recurrent arrays)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.kv_state import cache_len

    assert cache_len(a_cache) == cache_len(b_cache) == n
    for (name, a), (_, b) in zip(
        tree_flatten([c.state for c in a_cache]),
        tree_flatten([c.state for c in b_cache]),
        strict=True,
    ):
        if isinstance(a, mx.array) and a.ndim:
            rows = min(a.shape[-2], n) if a.ndim == 4 else None
            a, b = (a[..., :rows, :], b[..., :rows, :]) if rows else (a, b)
            assert mx.allclose(a, b, atol=1e-4).item(), name


def test_a_reply_ended_on_a_handed_out_token_drops_the_queued_verify(loaded):
    # What the scheduler does on a stop sequence the parser finds, or a cancellation: close().
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    run = drafting_run(loaded, prompt, steps)
    out: list = []
    until_queued(run, out, loaded)
    cache = run.close()
    assert run._verifies.launched is None
    tokens, plain, _ = decode(loaded, prompt, len(out), processors=[forced(loaded)])
    assert [r.token for r in out] == tokens
    same_state(cache, plain.cache, len(prompt) + len(out))


def test_a_stop_token_inside_a_verify_ends_it_there_with_nothing_queued(loaded):
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    tokens, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    # A token first seen late in the reply, where copies of the prompt are verified many at once.
    stop_at = max(i for i, t in enumerate(tokens) if tokens.index(t) == i and i < steps - 4)
    run = drafting_run(loaded, prompt, steps, stop=[[tokens[stop_at]]])
    out: list = []
    while not out or out[-1].finish_reason is None:
        out += run.next()
    assert [r.token for r in out] == tokens[: stop_at + 1]
    assert out[-1].finish_reason == "stop"
    assert run._verifies.launched is None  # nothing queued past the end
    assert run.drafting.record.verify_steps > 0
    _, plain, _ = decode(loaded, prompt, stop_at + 1, processors=[forced(loaded)])
    same_state(out[-1].prompt_cache, plain.cache, len(prompt) + stop_at + 1)


def test_others_arriving_while_a_verify_is_queued_get_plain_steps_after_it(loaded):
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain, plain_run, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    run = drafting_run(loaded, prompt, steps)
    out: list = []
    until_queued(run, out, loaded)
    run.others_waiting = True
    verified = run.drafting.record.verify_steps
    out += run.next()  # the queued verify's tokens, then plain from the next one
    assert run.drafting.record.verify_steps == verified + 1
    assert run._verifies.launched is None and run._batch is not None
    while len(out) < 30 and out[-1].finish_reason is None:
        out += run.next()
    assert run.drafting.record.verify_steps == verified + 1  # none while others wait
    run.others_waiting = False
    while out[-1].finish_reason is None:
        out += run.next()
    assert [r.token for r in out] == plain
    same_state(run.cache, plain_run.cache, len(prompt) + steps)


def test_a_handover_with_a_verify_queued_goes_on_in_the_batch_with_the_same_tokens(loaded):
    from mlx_lm.generate import BatchGenerator

    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain, plain_run, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    run = drafting_run(loaded, prompt, steps)
    out: list = []
    until_queued(run, out, loaded)
    response, joining = run.handover()
    assert run._verifies.launched is None
    _, upto, _ = decode(loaded, prompt, len(out), processors=[forced(loaded)])
    same_state(joining["caches"][0], upto.cache, len(prompt) + len(out))
    tokens = [r.token for r in out] + [response.token]
    gen = BatchGenerator(loaded.model, completion_batch_size=4, prefill_batch_size=4)
    (uid,) = gen.insert(**joining)
    finished = False
    while not finished:
        for r in gen.next()[1]:
            tokens.append(r.token)
            finished = r.finish_reason is not None
    gen.close()
    assert tokens == plain
