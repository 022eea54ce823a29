"""Structured output without a model: the JSON-reply grammar under random logits, refusals,
and the renderer's choice of when to enforce it."""

from __future__ import annotations

import json

import jsonschema
import pytest

from server.decoding.constrained.text_format import JSON_TEXT, plan_text
from server.errors import BadRequest
from server.request import ChatRequest
from tests.server.decoding.test_constrained import sample

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "sure": {"type": "boolean"},
        "why": {"type": "string", "maxLength": 12},
    },
    "required": ["answer", "sure", "why"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model_path)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_random_logits_always_make_valid_json(tokenizer, temperature):
    constraint = plan_text(tokenizer, SCHEMA, strict=True, name="answer")
    assert constraint.forced and constraint.fmt == JSON_TEXT
    eos = constraint.tokenizer.eos_tokens
    for seed in range(10):
        out = sample(constraint, max_tokens=200, seed=seed, temperature=temperature)
        assert out[-1] in eos  # the grammar ended the reply, not the budget
        text = constraint.tokenizer.decode_str([t for t in out if t not in eos])
        jsonschema.validate(json.loads(text), SCHEMA)


def test_what_cannot_be_enforced_is_a_400_unless_the_schema_is_lenient(tokenizer):
    lookbehind = {"type": "object", "properties": {"q": {"type": "string", "pattern": "(?<=a)b"}}}
    for strict in (True, False):
        with pytest.raises(BadRequest) as caught:
            plan_text(tokenizer, lookbehind, strict=strict, name="lb")
        assert "'lb'" in caught.value.message and "look-around" in caught.value.message
        assert caught.value.param == "text.format"
    conditional = {"type": "object", "if": {}, "then": {}}
    with pytest.raises(BadRequest, match="'c'.*if"):
        plan_text(tokenizer, conditional, strict=True, name="c")
    assert plan_text(tokenizer, conditional, strict=False, name="c") is not None


def test_the_renderer_enforces_the_format_only_where_no_tool_may_be_called(tiny_model_path):
    from mlx_lm.utils import load_tokenizer

    from server.prompt.render import PromptRenderer
    from server.testing.scripts import WEATHER_TOOL

    renderer = PromptRenderer(load_tokenizer(tiny_model_path), {"max_position_embeddings": 4096})
    fmt = {"schema": SCHEMA, "strict": True, "name": "answer"}
    hello = [{"role": "user", "content": "Say hello."}]
    plain = renderer.render(ChatRequest(messages=hello, text_format=fmt))
    assert plain.constraint is not None and plain.constraint.fmt == JSON_TEXT
    for choice in ("auto", "none"):
        request = ChatRequest(messages=hello, tools=[WEATHER_TOOL], tool_choice=choice)
        request.text_format = fmt
        rendered = renderer.render(request)
        fmt_of = rendered.constraint.fmt if rendered.constraint else None
        assert fmt_of == (JSON_TEXT if choice == "none" else "json_tools"), choice
    counted = renderer.render(ChatRequest(messages=hello, text_format=fmt), check_context=False)
    assert counted.constraint is None  # a token count compiles nothing
