"""The prompt length bounds: sound (never over a real count) and off where a tokenizer may drop
text."""

from __future__ import annotations

import pytest

from server.prompt.long_prompts import LengthBound, _keeps_characters, _normalizer_fold
from server.prompt.segments import SegmentEncoder
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model()))


def test_normalizers_that_may_drop_text_give_no_bound():
    assert _normalizer_fold(None) == 1
    assert _normalizer_fold({"type": "NFC"}) == 4
    seq = {"type": "Sequence", "normalizers": [{"type": "Prepend"}, {"type": "NFKC"}]}
    assert _normalizer_fold(seq) == 4
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    assert _normalizer_fold(replace) == 1
    deletion = {"type": "Replace", "pattern": {"String": "x"}, "content": ""}
    for dropping in (deletion, {"type": "Strip"}, {"type": "BertNormalizer"}):
        assert _normalizer_fold(dropping) is None
    assert _keeps_characters({"type": "ByteLevel"})
    assert not _keeps_characters({"type": "Whitespace"})
    assert not _keeps_characters({"type": "Split", "behavior": "Removed"})


@pytest.mark.parametrize(
    "text",
    ["#" * 5000, "=" * 3000 + " word" * 500, "\u00e9t\u00e9 " * 2000, "\U0001f600" * 1000],
)
def test_the_bounds_never_exceed_the_real_count(tokenizer, text):
    encoder = SegmentEncoder(tokenizer)
    real = len(encoder.encode(text))
    bound = LengthBound(tokenizer, encoder.encode, context=1)  # every bound applies
    assert bound.chars_per_token is not None
    assert len(text) // bound.chars_per_token <= real
    at_least = bound.at_least(text)
    assert at_least is None or at_least <= real


def test_a_prompt_under_the_context_is_never_refused(tokenizer):
    encoder = SegmentEncoder(tokenizer)
    text = "cache prefix token " * 3000  # ~9K tokens in 57K characters
    bound = LengthBound(tokenizer, encoder.encode, context=len(encoder.encode(text)) + 1)
    assert bound.at_least(text) is None
