"""A lone sequence decodes on its own cache and hands over into the batch mid-reply: the same
greedy tokens as the prompt decoded alone, each processor call sees each fed token once."""

from __future__ import annotations

import pytest

PROMPTS = ["Tell me about the river and the hills around it.", "Seven times six?"]


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


def alone_tokens(loaded, prompt: list[int], steps: int) -> list[int]:
    import mlx.core as mx
    from mlx_lm import stream_generate

    return [
        r.token
        for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt), max_tokens=steps)
    ]


def prefilled(loaded, prompt: list[int]) -> list:
    """A cache holding all of the prompt but its last token."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(loaded.model)
    loaded.model(mx.array(prompt[:-1])[None], cache=cache)
    mx.eval([c.state for c in cache])
    return cache


class LastTokenSeen:
    """A logits processor that leaves logits alone and records the last token it was shown."""

    def __init__(self):
        self.seen: list[int] = []

    def __call__(self, tokens, logits):
        self.seen.append(int(tokens[-1].item()))
        return logits


def solo(loaded, prompt, steps, processors=(), stop=()):
    from mlx_lm.generate import StopSequences

    from server.engine.solo_decode import SoloDecode

    return SoloDecode(
        loaded.model,
        prefilled(loaded, prompt),
        prompt,
        len(prompt) - 1,
        max_tokens=steps,
        sampler=lambda logprobs: logprobs.argmax(axis=-1),
        logits_processors=list(processors),
        stop_sequences=StopSequences([list(s) for s in stop]),
    )


def take(run, n: int) -> list:
    """The first `n` responses (a step may give several while drafting)."""
    out: list = []
    while len(out) < n:
        out += run.next()
    return out[:n]


def test_alone_it_decodes_like_stream_generate_and_finishes_on_length_or_a_stop_token(loaded):
    prompt = loaded.tokenizer.encode(PROMPTS[0])
    expected = alone_tokens(loaded, prompt, 12)
    run = solo(loaded, prompt, 12)
    responses = take(run, 12)
    assert [r.token for r in responses] == expected
    assert [r.finish_reason for r in responses] == [None] * 11 + ["length"]
    assert responses[-1].prompt_cache is run.cache  # the final state goes to the prefix cache

    # The last position whose token appears there first: the stop must not match earlier.
    stop_at = max(i for i, t in enumerate(expected) if expected.index(t) == i)
    run = solo(loaded, prompt, 12, stop=[[expected[stop_at]]])
    got = take(run, stop_at + 1)
    assert [r.finish_reason for r in got] == [None] * stop_at + ["stop"]


@pytest.mark.parametrize("after", [1, 5])
def test_a_handover_into_the_batch_goes_on_with_the_same_tokens(loaded, after):
    from mlx_lm.generate import BatchGenerator

    first, second = (loaded.tokenizer.encode(p) for p in PROMPTS)
    steps = 14
    seen = LastTokenSeen()
    run = solo(loaded, first, steps, processors=[seen])
    tokens = [r.token for r in take(run, after)]
    response, joining = run.handover()
    tokens.append(response.token)
    assert response.finish_reason is None

    gen = BatchGenerator(loaded.model, completion_batch_size=4, prefill_batch_size=4)
    (lone,) = gen.insert(**joining)
    (other,) = gen.insert([second], max_tokens=[steps])
    out = {lone: tokens, other: []}
    done = set()
    while len(done) < 2:
        for r in gen.next()[1]:
            out[r.uid].append(r.token)
            if r.finish_reason:
                assert r.finish_reason == "length"
                done.add(r.uid)
    gen.close()
    assert out[lone] == alone_tokens(loaded, first, steps)
    assert out[other] == alone_tokens(loaded, second, steps)
    # One processor call per fed token across the handover: the prompt's last, then each reply
    # token (each is fed as it is delivered: mlx-lm decodes one step ahead).
    assert seen.seen == [first[-1], *out[lone]]
