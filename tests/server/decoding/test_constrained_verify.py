"""The tool-call processor's batch path, without a model: a verify's positions masked at once
give the masks plain decoding gives, and after `commit` the processor holds the state plain
decoding leaves (the matcher, the call's bytes, the counters), whatever the drafts were: right,
forbidden by the grammar, allowed but wrong, or an end of turn."""

from __future__ import annotations

import pytest

from server.decoding.constrained.plan import plan
from server.decoding.constrained.processor import CallProcessor
from server.speculative.positions import accept
from server.testing.scripts import call_text

FORMATS = ["json_tools", "qwen3_coder"]


@pytest.fixture(scope="module", params=FORMATS)
def tokenizer(request, tiny_model_path):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model_path, {"tool_parser_type": request.param})


@pytest.fixture(scope="module")
def tools(claude_code_requests):
    body = claude_code_requests[0]["body"]
    return [
        {"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
        for t in body["tools"]
    ]


def depth(matcher) -> int:
    """How many tokens the matcher has consumed (a copy rolls back until it cannot): inside a
    string its mask alone does not tell one more character."""
    probe, n = matcher.deep_copy(), 0
    while probe.rollback(1) and not probe.is_error():
        n += 1
    return n


def state(p: CallProcessor) -> tuple:
    """What decides the processor's next masks."""
    m = p.matcher
    grammar = None
    if m is not None:
        mask = bytes(m.compute_bitmask())
        grammar = (mask, m.is_stopped(), m.is_accepting(), m.is_error(), depth(m))
    call = None if p.call is None else bytes(p.call)
    return (p.seen, p.generated, p.off, p.closing, p.cut_short, p._need, call, grammar)


class Model:
    """The logits each step sees, the same in both runs: noise, or a script it follows."""

    def __init__(self, vocab: int, script: list[int] | None = None):
        self.vocab, self.script = vocab, script

    def at(self, step: int):
        import mlx.core as mx

        logits = mx.random.normal((1, self.vocab), key=mx.random.key(step)) * 4
        if self.script is not None and step < len(self.script):
            logits = logits + 40 * (mx.arange(self.vocab) == self.script[step])
        return logits


def plain(constraint, max_tokens: int, model: Model):
    """Greedy decoding one position at a time: the tokens, and each step's state, allowed
    tokens and those the grammar alone allows (near max_tokens closing allows fewer)."""
    import mlx.core as mx

    from server.decoding.constrained.masks import unpack

    processor = CallProcessor(constraint, max_tokens)
    eos = set(constraint.tokenizer.eos_tokens)
    tokens, allowed, grammar, states = [0], [], [], []
    for step in range(max_tokens):
        row = processor(mx.array(tokens), model.at(step))
        allowed.append((row[0] > -mx.inf).tolist())
        m = processor.matcher
        free = m is None or m.is_stopped() or processor.off  # (its bitmask was not filled)
        grammar.append(allowed[-1] if free else unpack(processor.words, model.vocab)[0].tolist())
        states.append(state(processor))
        tokens.append(int(mx.argmax(row, axis=-1).item()))
        if tokens[-1] in eos:
            break
    return tokens[1:], allowed, grammar, states


def drafts_for(i: int, truth: list[int], grammar: list[list[bool]], eos: int) -> list[int]:
    """The `i`th verify's drafts: the true continuation, or one of them swapped at `i`'s turn for
    a token the grammar allows there but the model did not pick (half the time), one the grammar
    forbids, or the end of turn."""
    drafts = list(truth)
    if not drafts or i % 8 == 0:
        return drafts
    at = i % len(drafts)
    ok = grammar[at]  # drafts[at] follows position `at`
    if i % 4 == 1:
        swap = next((t for t, a in enumerate(ok) if not a), None)
    elif i % 8 == 4:
        swap = eos
    else:
        swap = next((t for t, a in enumerate(ok) if a and t != drafts[at]), None)
    if swap is not None:
        drafts[at] = swap
    return drafts


class Ends:
    """`deliver` for a verify from `step`: True where the reply ends (the end of turn, or its
    `max_tokens`th token)."""

    def __init__(self, step: int, max_tokens: int, eos: list[int]):
        self.number, self.max_tokens, self.eos = step - 1, max_tokens, eos

    def __call__(self, token: int) -> bool:
        self.number += 1  # the delivered token's number in the reply
        return self.number == self.max_tokens or token in self.eos


def check_verifies(constraint, max_tokens: int, model: Model) -> tuple[int, int]:
    """Decode with verifies of varied drafts against plain decoding; the verifies run, and how
    many of them rolled the processor back past drafts it had consumed."""
    import mlx.core as mx

    out, allowed, grammar, states = plain(constraint, max_tokens, model)
    eos = constraint.tokenizer.eos_tokens
    processor = CallProcessor(constraint, max_tokens)
    processor(mx.array([0]), model.at(0))  # the first step is a plain one, as in SoloDecode
    step, i, rolled = 1, 0, 0  # positions done; the token fed next is out[step - 1]
    while True:
        k = 1 + i % 6
        truth = out[step : step + k]
        fed = [out[step - 1], *drafts_for(i, truth, grammar[step : step + k], eos[0])]
        logits = mx.concatenate([model.at(step + j) for j in range(len(fed))])
        rows = processor.process_many(fed, logits)
        sampled = mx.argmax(rows, axis=-1).tolist()

        _, pending, shown = accept(fed[: len(sampled)], sampled, Ends(step, max_tokens, eos))
        processor.commit(shown)
        rolled += shown < len(sampled)
        for j in range(shown):  # the kept positions: plain decoding's masks and choices
            assert (rows[j] > -mx.inf).tolist() == allowed[step + j], (i, j)
            assert sampled[j] == out[step + j]
        if shown:
            assert state(processor) == states[step + shown - 1], (i, fed, truth)
        step, i = step + shown, i + 1
        if pending is None:  # the reply ended inside
            return i, rolled


@pytest.mark.parametrize("name", ["Edit", "Read"])
@pytest.mark.parametrize("extra", [3, 40])  # closing steered near max_tokens, and free
def test_a_forced_call_verified_at_once_leaves_the_state_plain_decoding_leaves(
    tokenizer, tools, name, extra
):
    constraint = plan(tokenizer, tools, name, parallel=False)
    vocab = constraint.tokenizer.vocab_size
    verifies, rolled = check_verifies(constraint, constraint.smallest_reply() + extra, Model(vocab))
    assert verifies > 4 and rolled > 0, (verifies, rolled)


def test_an_auto_call_opened_and_closed_inside_verifies_leaves_the_same_state(tokenizer, tools):
    # The model writes text, a call (the matcher starts at its opener and ends with it), text.
    fmt = "xml" if tokenizer.tool_parser.__module__.endswith("qwen3_coder") else "json"
    constraint = plan(tokenizer, tools, "auto")
    call = call_text("Read", {"file_path": "/tmp/a.py"}, fmt)
    script = tokenizer.encode(f"Let me look.\n{call}\nDone.", add_special_tokens=False)
    eos = constraint.tokenizer.eos_tokens[0]
    model = Model(constraint.tokenizer.vocab_size, [*script, eos])
    assert constraint.opener in script
    verifies, rolled = check_verifies(constraint, len(script) + 8, model)
    assert verifies > 4 and rolled > 0, (verifies, rolled)


def test_a_verifys_unmasked_rows_stay_whole_past_the_tokenizers_vocabulary():
    # Plain decoding leaves a row without a mask as it is: a padded vocabulary's tail included.
    import mlx.core as mx
    import numpy as np

    from server.decoding.constrained import masks

    words = np.array([[1], [0]], dtype=np.int32)  # row 0 allows token 0 alone
    logits = mx.zeros((2, 40))  # the model's vocabulary padded past the mask's 32 tokens
    out = masks.apply(logits, words, np.array([True, False]))
    assert (out[0] > -mx.inf).tolist() == [True] + [False] * 39
    assert (out[1] > -mx.inf).tolist() == [True] * 40
