"""Reasoning logic without a worker: the reply split, the budget processor, the signatures."""

from __future__ import annotations

import pytest

from server.api.thinking_signature import reasoning_of, sign
from server.decoding.reasoning import ReasoningParser
from server.decoding.reasoning_budget import LazyReasoningBudget, ReasoningBudget, budget_for
from server.decoding.reply_parser import ReplyParser
from server.request import ToolCallDelta


def run(parser, pieces: list[str]) -> list:
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.finish()


def collapse(events: list) -> list[tuple[str, str]]:
    """Adjacent deltas of one kind joined: [(kind, text or call name)]."""
    out: list[tuple[str, str]] = []
    for event in events:
        kind = type(event).__name__
        value = event.call.name if isinstance(event, ToolCallDelta) else event.text
        if out and out[-1][0] == kind and kind != "ToolCallDelta":
            out[-1] = (kind, out[-1][1] + value)
        else:
            out.append((kind, value))
    return out


def reasoning_parser(**kwargs) -> ReasoningParser:
    options = {k: kwargs.pop(k) for k in ("tool_parser", "call_start", "call_end", "tools", "stop")}
    answer = ReplyParser(**{k: v for k, v in options.items() if v is not None})
    call_start = options["call_start"]
    return ReasoningParser(answer, start="<think>", end="</think>", call_start=call_start, **kwargs)


def plain(**kwargs) -> ReasoningParser:
    base = dict(tool_parser=None, call_start=None, call_end=None, tools=None, stop=None)
    return reasoning_parser(**{**base, **kwargs})


def test_markers_split_across_segments_and_template_newlines_dropped():
    parser = plain()
    events = run(parser, ["<thi", "nk>\nab", "c\n", "\n</th", "ink>\n\nHel", "lo"])
    assert collapse(events) == [("ThinkingDelta", "abc"), ("TextDelta", "Hello")]
    # A newline inside the reasoning is kept: only the ones around it are the template's.
    events = run(plain(), ["<think>\na\n\nb\n</think>\n\nc"])
    assert collapse(events) == [("ThinkingDelta", "a\n\nb"), ("TextDelta", "c")]


def test_a_prompt_that_opens_the_think_block_starts_in_reasoning():
    parser = plain(reasoning=True)
    events = run(parser, ["plan", " it", "</think>", "\n\n", "done"])
    assert collapse(events) == [("ThinkingDelta", "plan it"), ("TextDelta", "done")]
    assert parser.reasoning_tokens == 3  # "plan", " it" and the end marker


def test_hidden_reasoning_never_reaches_the_answer():
    events = run(plain(reasoning=True, show=False), ["secret", "</think>", "shown"])
    assert collapse(events) == [("TextDelta", "shown")]


def test_a_reply_cut_off_in_reasoning_is_all_reasoning():
    events = run(plain(reasoning=True), ["still", " thinking", "\n"])
    assert collapse(events) == [("ThinkingDelta", "still thinking")]


def test_a_tool_call_after_and_inside_the_reasoning_is_parsed():
    from mlx_lm.tool_parsers import json_tools

    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    for reply in (f"<think>\nplan\n</think>\n\n{call}", f"<think>\nplan\n{call}"):
        parser = reasoning_parser(
            tool_parser=json_tools.parse_tool_call,
            call_start="<tool_call>",
            call_end="</tool_call>",
            tools=tools,
            stop=None,
        )
        events = run(parser, [reply[i : i + 3] for i in range(0, len(reply), 3)])
        assert collapse(events) == [("ThinkingDelta", "plan"), ("ToolCallDelta", "get_weather")]
        assert parser.calls == 1


def test_stop_strings_apply_to_the_answer():
    parser = plain(stop=["END"])
    events = run(parser, ["<think>x</think>", "one END two"])
    assert collapse(events) == [("ThinkingDelta", "x"), ("TextDelta", "one ")]
    assert parser.stopped == "END"


def test_budget_cap_leaves_the_answer_room():
    assert budget_for(None, None) is None
    assert budget_for(500, None) == 500
    assert budget_for(31999, 32000) == 32000 - 1024  # Claude Code's budget: the answer keeps 1K
    assert budget_for(None, 64) == 48
    assert budget_for(5, 64) == 5
    assert budget_for(None, 1) == 1


class Logits:
    """What the decode loop hands a processor: the tokens so far, then one row of logits."""

    def __init__(self, processor, vocab: int = 16):
        self.processor, self.vocab, self.tokens = processor, vocab, [0]

    def step(self, sampled: int | None = None) -> int | None:
        """Feed the last sampled token, return the token the processor forces (None: free)."""
        import mlx.core as mx

        if sampled is not None:
            self.tokens.append(sampled)
        out = self.processor(mx.array(self.tokens), mx.zeros((1, self.vocab)))
        finite = [i for i, v in enumerate(out[0].tolist()) if v != float("-inf")]
        return finite[0] if len(finite) == 1 else None


def budget(kind: str, budget: int, start: tuple, end: tuple, reasoning: bool):
    if kind == "lazy":  # one-token markers: the state stays in MLX arrays
        return LazyReasoningBudget(budget, start[0], end[0], reasoning)
    return ReasoningBudget(budget, start, end, reasoning)


@pytest.mark.parametrize(
    "kind, end", [("lazy", (9,)), ("host", (9,)), ("host", (9, 10))], ids=["lazy", "host", "two"]
)
def test_the_budget_forces_the_end_marker_then_lets_go(kind, end):
    steps = Logits(budget(kind, 3, start=(8,), end=end, reasoning=True))
    assert steps.step() is None  # the prompt's last token: nothing reasoned yet
    assert [steps.step(t) for t in (1, 2)] == [None, None]
    forced = [steps.step(3)]
    while len(forced) < len(end):
        forced.append(steps.step(forced[-1]))
    assert tuple(forced) == end
    assert [steps.step(t) for t in (forced[-1], 4, 5)] == [None, None, None]
    # Reopening the reasoning past the budget closes it again at once.
    assert steps.step(8) == end[0]


@pytest.mark.parametrize("kind", ["lazy", "host"])
def test_the_budget_counts_only_from_the_think_start(kind):
    steps = Logits(budget(kind, 2, start=(8,), end=(9,), reasoning=False))
    assert [steps.step(t) for t in (None, 1, 2, 3, 8, 4)] == [None] * 6
    assert steps.step(5) == 9


def test_a_signature_carries_the_reasoning_and_only_ours_verify():
    text = "Plan: read the file, then edit it.\n" * 20
    signature = sign(text)
    assert signature and reasoning_of(signature) == text
    assert reasoning_of(sign("")) == ""
    payload, _, tag = signature.rpartition(".")
    forged = sign("something else").rpartition(".")[0] + "." + tag
    assert reasoning_of(forged) is None
    assert reasoning_of(payload + ".AAAA") is None
    assert reasoning_of("EqQBCkgIARABGAIiQL") is None  # another server's signature
    assert reasoning_of(None) is None


def renderer(template: str):
    from mlx_lm.utils import load_tokenizer

    from server.prompt.render import PromptRenderer
    from tests.conftest import tiny_model

    return PromptRenderer(load_tokenizer(tiny_model(template=template)), {})


def render(prompts, **kwargs):
    from server.request import ChatRequest
    from server.testing.scripts import WEATHER_TOOL

    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    return prompts.render(ChatRequest(messages=messages, tools=[WEATHER_TOOL], **kwargs))


def test_the_switch_and_the_opening_decide_where_the_reply_starts():
    qwen3 = renderer("qwen3")
    on, off = render(qwen3, thinking=True), render(qwen3, thinking=False)
    assert not on.reasoning and on.thinking and on.text.endswith("<|im_start|>assistant\n")
    assert off.text.endswith("<think>\n\n</think>\n\n") and not off.reasoning and not off.thinking
    assert on.turn_start == off.turn_start == 0  # the model opens it: no checkpoint moves

    prompts = renderer("qwen3_thinking")
    opening = render(prompts, thinking=True)
    assert opening.reasoning and opening.text.endswith("<|im_start|>assistant\n<think>\n")
    # The generation prompt starts at its <|im_start|>: the hybrid checkpoint goes there.
    assert opening.turn_start > opening.system_len > 0
    tail = prompts.tokenizer.decode(opening.tokens[opening.turn_start :])
    assert tail == "<|im_start|>assistant\n<think>\n"


def test_a_forced_call_closes_the_reasoning_the_prompt_opened():
    forced = render(renderer("qwen3_thinking"), thinking=True, tool_choice="get_weather")
    assert forced.primed.startswith("</think>\n\n")
    assert not forced.reasoning and forced.turn_start == 0
    # The call itself: forced by the grammar where it can be, else primed after the close.
    by_grammar = forced.constraint is not None and forced.constraint.forced
    assert by_grammar != forced.primed.endswith("<tool_call>\n")
