"""The model's own MTP head as a draft source, on tiny hybrids (qwen3_next, qwen3_5) with random
heads: loaded from the `mtp.*` tensors mlx-lm drops, fed the verify forward's hidden states, its
guess extended by copy drafts or its own chain; greedy tokens and the cache state are those of
plain decoding, whether the head's guesses fail (a random head) or are made to agree (an
oracle); sampled tokens follow the model's distribution; the head equals mlx-vlm's Qwen3.5
drafter; `auto` takes it where its prior pays."""

from __future__ import annotations

import pytest

from tests.server.speculative.test_solo_drafting import PROMPT, REPLY, decode, forced


@pytest.fixture(scope="module", params=["qwen3_next", "qwen3_5"])
def loaded(request):
    """Qwen3-Next, and Qwen3.5's hybrid inside its multimodal wrapper."""
    from server.model.loading import load_model
    from tests.conftest import tiny_model

    return load_model(str(tiny_model(family=request.param, mtp=True)))


@pytest.fixture(scope="module")
def head(loaded):
    from server.model.mtp import load_mtp

    head = load_mtp(loaded.model, loaded.path, loaded.config)
    assert head is not None
    return head


def mtp_drafting(loaded, head, prompt, source=None, mode="mtp"):
    from server.speculative.mtp_drafts import MTPDrafts
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    return Drafting(mode, prompt, CostModel(), source=source or MTPDrafts(head, prompt))


def test_a_checkpoint_says_whether_it_has_an_mtp_head():
    from server.model.mtp import why_no_mtp
    from tests.conftest import tiny_model

    assert why_no_mtp(tiny_model(family="qwen3_next", mtp=True)) is None
    assert "no mtp.* weights" in (why_no_mtp(tiny_model(family="qwen3_next")) or "")
    assert "not qwen2" in (why_no_mtp(tiny_model()) or "")


def test_the_head_loads_the_weights_mlx_lm_drops(loaded, head):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.mtp import load_mtp

    saved = mx.load(str(loaded.path) + "/mtp.safetensors")
    for name, value in tree_flatten(head.module.parameters()):
        assert mx.array_equal(saved[f"mtp.{name}"], value), name
    assert not any(n.startswith("mtp") for n, _ in tree_flatten(loaded.model.parameters()))
    plain = load_mtp(loaded.model, loaded.path, {**loaded.config, "model_type": "qwen2"})
    assert plain is None


def test_the_original_layout_is_sanitized_as_mlx_lm_sanitizes_the_model():
    import mlx.core as mx

    from server.model.mtp import _sanitized

    weights = {
        "mtp.norm.weight": mx.zeros(4),
        "mtp.pre_fc_norm_hidden.weight": mx.zeros(4),
        "mtp.layers.0.input_layernorm.weight": mx.zeros(4),
        "mtp.fc.weight": mx.zeros((4, 8)),
        **{f"mtp.layers.0.mlp.experts.{e}.up_proj.weight": mx.full((2, 4), e) for e in range(3)},
    }
    out = _sanitized(weights, centred=True, n_experts=3)
    for norm in ("norm.weight", "pre_fc_norm_hidden.weight", "layers.0.input_layernorm.weight"):
        assert mx.array_equal(out[norm], mx.ones(4)), norm  # stored centred on zero
    assert mx.array_equal(out["fc.weight"], mx.zeros((4, 8)))
    stacked = out["layers.0.mlp.switch_mlp.up_proj.weight"]
    assert stacked.shape == (3, 2, 4) and stacked[2, 0, 0].item() == 2
    assert _sanitized(weights, centred=False, n_experts=3)["norm.weight"].sum().item() == 0


def test_one_forward_gives_the_logits_and_the_hidden_states(loaded):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from server.model.mtp import logits_and_hidden

    tokens = mx.array([loaded.tokenizer.encode(PROMPT)])
    logits, hidden = logits_and_hidden(loaded.model, tokens, make_prompt_cache(loaded.model))
    plain = loaded.model(tokens, cache=make_prompt_cache(loaded.model))
    assert mx.array_equal(logits, plain) and hidden.shape == (*tokens.shape, 64)


def test_greedy_tokens_are_those_of_plain_decoding_when_the_head_is_wrong(loaded, head):
    prompt = loaded.tokenizer.encode(PROMPT)
    steps = len(loaded.tokenizer.encode(REPLY)) + 4
    plain, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded)])
    drafting = mtp_drafting(loaded, head, prompt)
    tokens, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded)], drafting=drafting)
    assert tokens == plain
    record = drafting.record
    assert record.source == "mtp" and record.verify_steps > 5
    assert record.accepted < record.drafted  # a random head's guesses fail: rolled back
    assert record.accepted > 0  # the copies stacked on its guess: its guess was right at times


class Agreeing:
    """An oracle in the head's place, for tests: the real head runs (its cache, the hidden
    states), then its guess is replaced by the token plain decoding gives there, wrong at every
    `wrong_every`th proposal, so acceptance and rejection both happen."""

    def __init__(self, source, prompt: list[int], reply: list[int], wrong_every: int):
        self.source, self.prompt, self.reply = source, prompt, reply
        self.wrong_every, self.calls = wrong_every, 0
        self.name, self.free, self.longest = source.name, source.free, source.longest
        self.reads_hidden = True
        self.extend, self.observe = source.extend, source.observe

    @property
    def primed(self) -> bool:
        return self.source.primed

    def propose(self, k: int) -> list[int]:
        drafts = self.source.propose(k)
        at = len(self.source) - len(self.prompt)  # the next token's index in the reply
        if not drafts or at >= len(self.reply):
            return drafts
        self.calls += 1
        right = self.reply[at]
        first = right + 1 if self.calls % self.wrong_every == 0 else right
        return [first, *self.source.copies.propose_after([first], k - 1)]


@pytest.mark.parametrize("wrong_every", [2, 5])
def test_greedy_tokens_and_cache_are_those_of_plain_decoding_when_the_head_agrees(
    loaded, head, wrong_every
):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.kv_state import cache_len
    from server.speculative.mtp_drafts import MTPDrafts

    prompt = loaded.tokenizer.encode(PROMPT)
    steps = 48
    plain, plain_run, _ = decode(loaded, prompt, steps)  # the model's own (free) choices
    source = Agreeing(MTPDrafts(head, prompt), prompt, plain, wrong_every)
    drafting = mtp_drafting(loaded, head, prompt, source=source)
    tokens, run, _ = decode(loaded, prompt, steps, drafting=drafting)
    assert tokens == plain
    record = drafting.record
    assert record.accepted >= source.calls // 2 and record.accepted < record.drafted
    assert record.tokens_per_step > 1.4
    assert cache_len(run.cache) == cache_len(plain_run.cache) == len(prompt) + steps
    for (name, a), (_, b) in zip(
        tree_flatten([c.state for c in plain_run.cache]),
        tree_flatten([c.state for c in run.cache]),
        strict=True,
    ):
        if isinstance(a, mx.array) and a.ndim:
            n = min(a.shape[-2], cache_len(plain_run.cache)) if a.ndim == 4 else None
            a, b = (a[..., :n, :], b[..., :n, :]) if n else (a, b)
            assert mx.allclose(a, b, atol=1e-4).item(), name


def test_without_copies_the_head_chains_its_guesses_and_drops_them_after(loaded, head):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from server.model.mtp import logits_and_hidden
    from server.speculative.mtp_drafts import MTP_CHAIN, MTPDrafts

    context = [11, 12, 13, 14]  # no repeats: no copy drafts
    source = MTPDrafts(head, context)
    assert not source.primed and source.propose(4) == []
    _, hidden = logits_and_hidden(
        loaded.model, mx.array([context]), make_prompt_cache(loaded.model)
    )
    source.observe(hidden[:, -1:], [14], 15)  # a verify of no drafts: 14 fed, 15 sampled
    source.extend([15])
    assert source.primed
    drafts = source.propose(4)
    assert len(drafts) == MTP_CHAIN and source.cache[0].offset == 1 + (MTP_CHAIN - 1)
    source.observe(hidden[:, -2:], [15, drafts[0]], 99)  # one accepted
    assert source.cache[0].offset == 1  # its own guesses dropped; the next feed is the model's
    source.extend([drafts[0], 99])
    assert source.primed
    source.extend([7])  # a plain step: no hidden state for it
    assert not source.primed and source.propose(4) == []


def test_the_head_computes_what_mlx_vlms_qwen3_5_drafter_computes():
    # mlx-vlm's drafter (its own layers, its own loader of the same checkpoint) as a reference;
    # it has no qwen3_next drafter.
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_vlm.speculative.drafters import load_drafter

    from server.model.loading import load_model
    from server.model.mtp import load_mtp, logits_and_hidden
    from tests.conftest import tiny_model

    loaded = load_model(str(tiny_model(family="qwen3_5", mtp=True)))
    head = load_mtp(loaded.model, loaded.path, loaded.config)
    assert head is not None
    drafter, _ = load_drafter(loaded.path, kind="mtp")
    drafter.set_dtype(mx.float32)
    drafter.reset(loaded.model)
    tokens = mx.array([loaded.tokenizer.encode(PROMPT)])
    _, hidden = logits_and_hidden(loaded.model, tokens, make_prompt_cache(loaded.model))
    following = mx.concatenate([tokens[:, 1:], mx.array([[7]])], axis=1)
    theirs = drafter._forward_tokens(following, hidden, mx.int32)
    logits, ours = head(hidden, following, head.make_cache())
    assert mx.allclose(ours, theirs, atol=1e-5).item()
    assert mx.array_equal(logits.argmax(-1), drafter._lm_head_fn(theirs).argmax(-1)).item()


@pytest.mark.parametrize(
    "mode, head_cost, images, source",
    [
        ("auto", 0.02, False, "mtp"),  # a real checkpoint's head: a small part of the model
        ("auto", 0.6, False, "copy"),  # a tiny model's, mostly its LM head: never pays
        ("auto", 0.02, True, "copy"),  # images: copies of the text around them
        ("mtp", 0.6, False, "mtp"),  # the user's choice wins
        ("copy", 0.02, False, "copy"),
    ],
)
def test_auto_drafts_with_the_head_where_its_prior_pays(head, mode, head_cost, images, source):
    from types import SimpleNamespace

    from server.engine.runner import Runner
    from server.speculative.guard import SpeedGuard
    from server.speculative.policy import CostModel

    runner = SimpleNamespace(
        settings=SimpleNamespace(speculative=mode, prefill_step_size=512),
        mtp=head,
        mtp_costs=CostModel(head_cost),
        draft=None,
        draft_costs=None,
        copy_costs=CostModel(),
        draft_guard=SpeedGuard(),
        _pays=Runner._pays,
    )
    spans = [SimpleNamespace(start=2, end=5)] if images else []
    rendered = SimpleNamespace(tokens=list(range(100, 140)), images=spans, copy_views=[])
    job = SimpleNamespace(rendered=rendered)
    drafting = Runner.drafting(runner, job)
    assert drafting.source.name == source and drafting.mode == mode


def test_sampled_tokens_follow_the_models_distribution_when_the_verify_keeps_hidden_states():
    # The same rule as without an MTP head (test_acceptance), through the split forward that
    # hands the hidden states on: 6000 draws, seed 0, 0.03 (about 4 standard errors).
    from types import SimpleNamespace

    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    from server.speculative.verify import verify
    from tests.server.speculative.test_acceptance import PROBS, FixedModel

    model = SimpleNamespace(
        model=FixedModel(), args=SimpleNamespace(tie_word_embeddings=False), lm_head=lambda h: h
    )
    handed: list[tuple[int, int]] = []
    mx.random.seed(0)
    sampler = make_sampler(temp=1.0)
    counts = [0] * len(PROBS)
    n = 6000
    for _ in range(n):
        step = verify(
            model,
            [],
            pending=1,
            drafts=[3, 3],  # a rare token
            sampler=sampler,
            processors=[],
            context=None,
            deliver=lambda token: False,
            hidden_to=lambda hidden, delivered, pending: handed.append(
                (hidden.shape[1], len(delivered))
            ),
        )
        counts[step.delivered[1] if step.accepted else step.pending] += 1
    for got, want in zip(counts, PROBS, strict=True):
        assert abs(got / n - want) < 0.03, (counts, PROBS)
    assert len(handed) == n and all(rows == 3 and 1 <= kept <= 3 for rows, kept in handed)
