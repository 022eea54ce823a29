"""The lone-sequence decode with copy drafts: the same tokens as plain decoding on a plain KV model
and on a hybrid one (ArraysCache + KVCache), the same cache state after rejected drafts, the
processors keeping what plain decoding shows them (each token once and in order without a batch
path; every position at once, then the accepted ones, with it), and `auto` stepping back when
drafts fail."""

from __future__ import annotations

import pytest

PROMPT = (
    "def area(width, height):\n    return width * height\n\n"
    "def volume(width, height, depth):\n    return area(width, height) * depth\n"
)
# Copies the prompt with changes, so some drafts are accepted and some rejected.
REPLY = (
    "def area(width, height):\n    return width * height * 2\n\n"
    "def volume(width, height, depth):\n    return area(width, height) * depth\n"
)


@pytest.fixture(scope="module", params=["qwen2", "qwen3_next", "gemma3_text"])
def loaded(request):
    """A plain KV model, a hybrid (ArraysCache + KVCache) and a sliding window (RotatingKVCache
    of 64 tokens: it drafts only while a verify cannot wrap it)."""
    from server.model.loading import load_model
    from tests.conftest import tiny_model

    return load_model(str(tiny_model(family=request.param)))


class Seen:
    """Records the last token each call is shown; changes nothing."""

    def __init__(self):
        self.seen: list[int] = []

    def __call__(self, tokens, logits):
        self.seen.append(int(tokens[-1].item()))
        return logits


class SeenAtOnce(Seen):
    """The same, with the batch path: records each verify's positions and what `commit` keeps."""

    def __init__(self):
        super().__init__()
        self.verifies: list[list[int]] = []

    def process_many(self, fed, logits):
        self.verifies.append(list(fed))
        return logits

    def commit(self, kept):
        self.seen += self.verifies[-1][:kept]


def decode(loaded, prompt, steps, *, mode=None, processors=(), costs=None, drafting=None):
    """Every response of a SoloDecode run to its end, and the decode (its cache, its record);
    `drafting` in place of copy drafts in `mode`."""
    import mlx.core as mx
    from mlx_lm.generate import StopSequences
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.solo_decode import SoloDecode
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    cache = make_prompt_cache(loaded.model)
    loaded.model(mx.array(prompt[:-1])[None], cache=cache)
    if drafting is None and mode:
        drafting = Drafting(mode, prompt, costs or CostModel())
    run = SoloDecode(
        loaded.model,
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
    while not out or out[-1].finish_reason is None:
        out += run.next()
    return [r.token for r in out], run, drafting


def forced(loaded, text=REPLY):
    from server.testing.forcing import ForceTokens

    return ForceTokens(loaded.tokenizer.encode(text), min(loaded.tokenizer.eos_token_ids))


def test_greedy_tokens_and_processor_calls_are_those_of_plain_decoding(loaded):
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain_seen, copy_seen = Seen(), Seen()
    plain, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded), plain_seen])
    tokens, run, drafting = decode(
        loaded, prompt, steps, mode="copy", processors=[forced(loaded), copy_seen]
    )
    assert tokens == plain
    record = drafting.record
    assert record.accepted > 10 and record.accepted < record.drafted  # some drafts failed
    assert record.verify_steps < len(tokens) / 2
    # Without a batch path: each fed token shown once, in order, none of the rejected drafts.
    assert copy_seen.seen == plain_seen.seen[: len(copy_seen.seen)]


def test_processors_with_a_batch_path_see_every_position_and_keep_the_accepted_ones(loaded):
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain_seen, copy_seen = Seen(), SeenAtOnce()
    plain, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded), plain_seen])
    tokens, _, drafting = decode(
        loaded, prompt, steps, mode="copy", processors=[forced(loaded), copy_seen]
    )
    assert tokens == plain
    # One call per verify, shown every position (rejected drafts too)...
    assert len(copy_seen.verifies) == drafting.record.verify_steps > 0
    shown = sum(len(fed) for fed in copy_seen.verifies)
    assert shown == drafting.record.drafted + drafting.record.verify_steps
    # ...and what the commits kept is what plain decoding showed, in order.
    assert copy_seen.seen == plain_seen.seen[: len(copy_seen.seen)]
    assert len(copy_seen.seen) >= len(plain_seen.seen) - 1


def test_free_decoding_is_unchanged_by_drafting(loaded):
    # The random model's own choices (it repeats itself, so some drafts are right).
    prompt = loaded.tokenizer.encode(PROMPT)
    plain, _, _ = decode(loaded, prompt, 64)
    tokens, _, drafting = decode(loaded, prompt, 64, mode="copy")
    assert tokens == plain
    # Past its window a sliding one cannot draft (a verify would wrap it).
    if loaded.config["model_type"] != "gemma3_text":
        assert drafting.record.verify_steps > 0


def test_after_rejected_drafts_the_cache_holds_what_plain_decoding_leaves(loaded):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.kv_state import cache_len

    prompt = loaded.tokenizer.encode(PROMPT)
    steps = 40
    _, plain, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    _, drafted, drafting = decode(loaded, prompt, steps, mode="copy", processors=[forced(loaded)])
    assert drafting.record.accepted < drafting.record.drafted  # rejections were rolled back
    assert cache_len(drafted.cache) == cache_len(plain.cache) == len(prompt) + steps
    for (name, a), (_, b) in zip(
        tree_flatten([c.state for c in plain.cache]),
        tree_flatten([c.state for c in drafted.cache]),
        strict=True,
    ):
        if isinstance(a, mx.array) and a.ndim:
            n = min(a.shape[-2], cache_len(plain.cache)) if a.ndim == 4 else None
            a, b = (a[..., :n, :], b[..., :n, :]) if n else (a, b)
            assert mx.allclose(a, b, atol=1e-4).item(), name


def test_auto_stops_drafting_when_drafts_keep_failing(loaded):
    # "the" always follows a period, and what followed it last time never follows it again:
    # every copy guess is wrong.
    from server.speculative.policy import CostModel

    words = "red blue green black white brown pink gray gold cyan lime navy teal plum rose"
    animals = "fox cat owl dog cow pig hen elk yak ant bee eel ape bat emu"
    pairs = [f" the {c} {a}." for c, a in zip(words.split(), animals.split(), strict=True)]
    prompt = loaded.tokenizer.encode(pairs[0] + pairs[1])
    reply = "".join(pairs[2:])
    costs = CostModel()
    steps = len(loaded.tokenizer.encode(reply))
    plain, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded, reply)])
    tokens, _, drafting = decode(
        loaded, prompt, steps, mode="auto", processors=[forced(loaded, reply)], costs=costs
    )
    assert tokens == plain
    record = drafting.record
    assert record.accepted == 0
    assert record.verify_steps < len(pairs) - 2, record  # it tried, saw them fail, stopped


def test_a_lone_sequence_decodes_plainly_while_others_wait_and_drafts_again_after(loaded):
    import mlx.core as mx
    from mlx_lm.generate import StopSequences
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.solo_decode import SoloDecode
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    cache = make_prompt_cache(loaded.model)
    loaded.model(mx.array(prompt[:-1])[None], cache=cache)
    drafting = Drafting("copy", prompt, CostModel())
    run = SoloDecode(
        loaded.model,
        cache,
        prompt,
        len(prompt) - 1,
        max_tokens=steps,
        sampler=lambda logprobs: logprobs.argmax(axis=-1),
        logits_processors=[forced(loaded)],
        stop_sequences=StopSequences([]),
        drafting=drafting,
    )
    run.others_waiting = True
    out: list = []
    while len(out) < 6:
        out += run.next()
    assert drafting.record.verify_steps == 0  # others waited: no verify held them up
    run.others_waiting = False
    while out[-1].finish_reason is None:
        out += run.next()
    assert drafting.record.verify_steps > 0  # alone again: it drafts
    assert [r.token for r in out] == plain
