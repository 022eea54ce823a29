"""The draft-model source: drafting with the target itself is accepted all the way and decodes
the same greedy tokens; a smaller draft with other weights decodes the same tokens as plain
decoding, its cache kept in step with what was accepted; tokenizers are compared; the cost
model counts the draft's forwards before it has measured them."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from tests.server.speculative.test_solo_drafting import PROMPT, decode


@pytest.fixture(scope="module")
def target():
    from server.model.loading import load_model

    return load_model(str(tiny_model()))


def drafting_with(draft_model, prompt, mode="draft"):
    from server.speculative.draft_model import DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    return Drafting(mode, prompt, CostModel(), source=DraftModel(draft_model, prompt))


def decode_drafting(loaded, prompt, steps, drafting):
    return decode(loaded, prompt, steps, drafting=drafting)


def test_the_target_as_its_own_draft_is_accepted_and_decodes_the_same(target):
    prompt = target.tokenizer.encode(PROMPT)
    plain, _, _ = decode(target, prompt, 48)
    tokens, _, drafting = decode_drafting(target, prompt, 48, drafting_with(target.model, prompt))
    assert tokens == plain
    record = drafting.record
    assert record.source == "draft" and record.verify_steps > 0
    assert record.accepted >= 0.95 * record.drafted
    assert record.tokens_per_step > 4  # 4 drafts and the model's own token, nearly every step


def test_another_draft_decodes_the_same_tokens_and_keeps_its_cache_in_step(target):
    from server.model.kv_state import cache_len
    from server.model.loading import load_model

    draft = load_model(str(tiny_model(seed=1, layers=1)))
    prompt = target.tokenizer.encode(PROMPT)
    plain, _, _ = decode(target, prompt, 48)
    drafting = drafting_with(draft.model, prompt)
    tokens, run, _ = decode_drafting(target, prompt, 48, drafting)
    assert tokens == plain
    assert drafting.record.accepted < drafting.record.drafted  # rejections were trimmed off
    drafting.close()  # the reply's end takes back guesses it did not take
    source = drafting.source
    assert source.cached == source.context[: len(source.cached)]
    assert cache_len(source.cache) == len(source.cached)


def test_tokenizers_are_compared_by_vocabulary_and_ids(target):
    from mlx_lm.utils import load_tokenizer

    from server.model.draft import tokenizer_mismatch

    same = load_tokenizer(tiny_model(seed=1, layers=1))
    other = load_tokenizer(tiny_model(vocab_size=4096))
    assert tokenizer_mismatch(target.tokenizer, same) is None
    assert "vocabulary" in (tokenizer_mismatch(target.tokenizer, other) or "")


def test_auto_counts_the_draft_forwards_before_measuring_them():
    from server.speculative.policy import CostModel, choose

    # A draft as large as the target never pays at a middling acceptance; a tiny one does.
    assert choose(0.6, CostModel(draft_cost=1.0), 1000, 16) == 0
    assert choose(0.6, CostModel(draft_cost=0.02), 1000, 16) > 0


def test_auto_never_drafts_with_a_draft_as_large_as_the_model(target):
    from server.model.draft import weight_ratio
    from server.speculative.draft_model import DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    prompt = target.tokenizer.encode(PROMPT)
    costs = CostModel(weight_ratio(target.model, target.model))
    source = DraftModel(target.model, prompt)
    drafting = Drafting("auto", prompt, costs, source=source)
    plain, _, _ = decode(target, prompt, 32)
    tokens, _, _ = decode_drafting(target, prompt, 32, drafting)
    assert tokens == plain
    assert drafting.record.verify_steps == 0
    assert len(source.cached) == len(prompt) - 1  # no draft forward beyond the prefill
