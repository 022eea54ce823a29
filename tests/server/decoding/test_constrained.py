"""Constrained tool calls without a model: grammars, refusals, and the processor under random
logits (every sampled call must parse with mlx-lm's own parser and validate)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from server.decoding.constrained import closing
from server.decoding.constrained.plan import plan
from server.decoding.constrained.processor import CallProcessor
from server.errors import BadRequest
from server.testing.scripts import call_text

FORMATS = ["json_tools", "qwen3_coder"]
# Claude Code tools with required fields, enums, integer bounds, arrays of objects, maxLength.
PICKED = ["Read", "Edit", "Bash", "ReportFindings", "ListAgents", "Write"]


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


def schema_of(tools, name):
    return next(t["function"]["parameters"] for t in tools if t["function"]["name"] == name)


def fmt_of(tokenizer) -> str:
    return tokenizer.tool_parser.__module__.rsplit(".", 1)[-1]


def accepts(constraint, text: str) -> bool:
    matcher = constraint.new_matcher()
    ids = constraint.tokenizer.tokenize_str(text)
    return all(matcher.consume_token(i) for i in ids) and matcher.is_accepting()


def test_a_call_as_the_template_writes_it_is_accepted_and_a_bad_one_is_not(tokenizer, tools):
    fmt = "xml" if fmt_of(tokenizer) == "qwen3_coder" else "json"
    constraint = plan(tokenizer, tools, "required")
    good = {"file_path": "/tmp/a.py", "old_string": "x = 1", "new_string": "x = 2"}
    assert accepts(constraint, call_text("Edit", good, fmt))
    assert not accepts(constraint, call_text("Edit", {"file_path": "/tmp/a.py"}, fmt))  # required
    assert not accepts(constraint, call_text("Edit", {**good, "mode": "fast"}, fmt))  # additional
    assert not accepts(constraint, call_text("Nope", good, fmt))  # not a tool
    level = {"findings": [], "level": "extreme"}
    if fmt == "json":  # (the XML form writes non-strings as JSON, which _call does not)
        assert not accepts(constraint, call_text("ReportFindings", level, fmt))  # enum
    named = plan(tokenizer, tools, "Read")
    assert not accepts(named, call_text("Edit", good, fmt))
    assert accepts(named, call_text("Read", {"file_path": "/tmp/a.py", "offset": 3}, fmt))


def test_an_uncompilable_schema_names_the_tool_and_the_construct(tokenizer, tools):
    bad = {
        "type": "function",
        "function": {
            "name": "Lookbehind",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "pattern": "(?<=a)b"}},
            },
        },
    }
    for choice in ("required", "auto"):
        with pytest.raises(BadRequest) as caught:
            plan(tokenizer, [*tools, bad], choice)
        assert "'Lookbehind'" in caught.value.message and "look-around" in caught.value.message


def test_unknown_keywords_are_refused_when_forced_and_skipped_under_auto(tokenizer):
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "if": {}, "then": {}}},
    }
    with pytest.raises(BadRequest, match="'f'.*if"):
        plan(tokenizer, [tool], "f")
    assert plan(tokenizer, [tool], "auto") is not None


def sample(constraint, max_tokens: int, seed: int, temperature: float) -> list[int]:
    """mlx-lm's decode loop in miniature, on random logits: what the grammar alone allows."""
    import mlx.core as mx

    llt = constraint.tokenizer
    processor = CallProcessor(constraint, max_tokens)
    mx.random.seed(seed)
    tokens, out = mx.array([0]), []
    for _ in range(max_tokens):
        logits = processor(tokens, mx.random.normal((1, llt.vocab_size)) * 4)
        if temperature:
            token = int(mx.random.categorical(logits / temperature).item())
        else:
            token = int(mx.argmax(logits, axis=-1).item())
        out.append(token)
        tokens = mx.concatenate([tokens, mx.array([token])])
        if token in llt.eos_tokens:
            break
    processor(tokens, mx.zeros((1, llt.vocab_size)))  # the step after the last, as mlx-lm does
    return out


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_random_logits_under_a_forced_choice_always_make_a_valid_call(
    tokenizer, tools, temperature
):
    from server.decoding.reply_parser import ReplyParser

    for seed in range(20):
        name = PICKED[seed % len(PICKED)]
        parallel = bool(seed % 2)
        constraint = plan(tokenizer, tools, name, parallel=parallel)
        out = sample(constraint, max_tokens=48 + 8 * (seed % 4), seed=seed, temperature=temperature)
        eos = constraint.tokenizer.eos_tokens
        text = constraint.tokenizer.decode_str([t for t in out if t not in eos])
        parser = ReplyParser(
            tool_parser=tokenizer.tool_parser,
            call_start=tokenizer.tool_call_start,
            call_end=tokenizer.tool_call_end,
            tools=tools,
        )
        events = parser.feed(text) + parser.finish()
        calls = [e.call for e in events if hasattr(e, "call")]
        assert calls and {c.name for c in calls} == {name}, text  # parallel calls allowed
        for call in calls:
            jsonschema.validate(call.arguments, schema_of(tools, name))
        if not parallel:  # one call, then the end of turn
            assert len(calls) == 1 and not [e for e in events if not hasattr(e, "call")], text


def test_random_logits_at_the_edge_of_the_budget_still_make_a_valid_call(tokenizer, tools):
    """From the smallest budget admission lets through to a few dozen tokens over it, whatever
    the model would pick, the call closes in time and validates."""
    from server.decoding.reply_parser import ReplyParser

    for name in ("Read", "Edit", "Write", "ReportFindings"):
        constraint = plan(tokenizer, tools, name, parallel=False)
        smallest = constraint.smallest_reply()
        for extra in (0, 1, 3, 7, 12, 20, 30):
            for seed in range(3):
                out = sample(constraint, smallest + extra, seed=seed, temperature=1.0)
                eos = constraint.tokenizer.eos_tokens
                text = constraint.tokenizer.decode_str([t for t in out if t not in eos])
                parser = ReplyParser(
                    tool_parser=tokenizer.tool_parser,
                    call_start=tokenizer.tool_call_start,
                    call_end=tokenizer.tool_call_end,
                    tools=tools,
                )
                calls = [e.call for e in parser.feed(text) + parser.finish() if hasattr(e, "call")]
                assert [c.name for c in calls] == [name], (smallest, extra, text)
                jsonschema.validate(calls[0].arguments, schema_of(tools, name))


def test_auto_leaves_text_alone_and_constrains_a_call_once_opened(tokenizer, tools):
    import mlx.core as mx

    constraint = plan(tokenizer, tools, "auto")
    llt = constraint.tokenizer
    processor = CallProcessor(constraint, 200)
    free = mx.zeros((1, llt.vocab_size))
    prompt = mx.array([0])
    assert processor(prompt, free) is free  # text: untouched
    opener = mx.array([0, constraint.opener])
    masked = processor(opener, free)
    allowed = [i for i, v in enumerate(masked[0].tolist()) if v > -1e30]
    assert llt.decode_bytes(allowed[:1]).startswith(b"\n")  # the body must follow the opener
    assert len(allowed) < llt.vocab_size // 10


def test_closing_targets_end_what_is_open():
    end = b"</tool_call>"
    assert closing.target("json_tools", b'\n{"name": "f", "arguments": {"a": "x', end) == (
        b'"}}\n' + end
    )
    assert closing.target("json_tools", b'\n{"a": [1, {"b": "}"}', end) == b"]}\n" + end
    xml = b"\n<function=f>\n<parameter=a>\nsome text\n</para"
    assert closing.target("qwen3_coder", xml, end) == b"meter>\n</function>\n" + end
    assert closing.target("json_tools", b'\n{"a": 1}\n' + end, end) is None


def test_claude_code_tools_compile_fast_enough_to_not_matter(tokenizer, tools):
    # Not a timing test: the compile must simply succeed for all twelve, in both modes.
    assert plan(tokenizer, tools, "required").forced
    assert not plan(tokenizer, tools, "auto").forced
    assert json.dumps(schema_of(tools, "Read"))


def test_parallel_calls_only_where_allowed(tokenizer, tools):
    fmt = "xml" if fmt_of(tokenizer) == "qwen3_coder" else "json"
    one = call_text("Read", {"file_path": "/a"}, fmt)
    assert accepts(plan(tokenizer, tools, "Read", parallel=True), one + "\n" + one)
    single = plan(tokenizer, tools, "Read", parallel=False)
    assert accepts(single, one) and not accepts(single, one + "\n" + one)


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_arguments_are_the_arguments_the_parser_reads(fmt, tools):
    import importlib

    from server.decoding.constrained.streaming import STREAMERS, XmlStreamer
    from server.decoding.reply_parser import parse_calls
    from server.request import ToolCallArgs, ToolCallBegin

    args = {
        "file_path": '/tmp/a "quoted".py',
        "old_string": "line\n</param but not the end\n\té",
        "new_string": "x = 2\n",
        "replace_all": True,
    }
    text = call_text("Edit", args, "xml" if fmt == "qwen3_coder" else "json")
    if fmt == "qwen3_coder":  # the XML form writes non-strings as JSON
        text = text.replace("<parameter=replace_all>\nTrue", "<parameter=replace_all>\ntrue")
    body = text.removeprefix("<tool_call>").removesuffix("</tool_call>")
    streamer = XmlStreamer(tools) if fmt == "qwen3_coder" else STREAMERS[fmt]()
    events = []
    for i in range(1, len(body) + 1, 3):  # a few characters at a time, as tokens come
        events += streamer.update(body[:i])
    events += streamer.update(body)
    assert isinstance(events[0], ToolCallBegin) and events[0].name == "Edit"
    streamed = json.loads("".join(e.text for e in events if isinstance(e, ToolCallArgs)))
    parser = importlib.import_module(f"mlx_lm.tool_parsers.{fmt}").parse_tool_call
    [call] = parse_calls(parser, body, tools)
    assert streamed == call.arguments == args


def test_a_forced_choice_renders_the_same_prompt_as_auto(tokenizer, tools):
    # The grammar does the forcing, so the prompt (and its cached prefix) stays the same.
    from server.prompt.render import PromptRenderer
    from server.request import ChatRequest

    renderer = PromptRenderer(tokenizer, {})
    messages = [{"role": "user", "content": "Edit the file."}]
    auto = renderer.render(ChatRequest(messages=messages, tools=tools, tool_choice="auto"))
    for choice in ("required", "Edit"):
        forced = renderer.render(ChatRequest(messages=messages, tools=tools, tool_choice=choice))
        assert forced.tokens == auto.tokens and forced.primed == ""
        assert forced.constraint.forced and not auto.constraint.forced


def test_count_tokens_renders_a_forced_choice_as_the_request_does(tokenizer, tools):
    from server.prompt.render import PromptRenderer
    from server.request import ChatRequest

    renderer = PromptRenderer(tokenizer, {})
    request = ChatRequest(messages=[{"role": "user", "content": "Go."}], tools=tools)
    request.tool_choice = "Read"
    counted = renderer.render(request, check_context=False)
    assert counted.constraint is None  # nothing to compile for a count
    assert counted.tokens == renderer.render(request).tokens


def test_a_planned_constraint_survives_the_ranks_pickle_and_still_constrains():
    """Ranks receive rendered prompts pickled: the constraint travels without llguidance's
    objects and each rank rebuilds them from its own tokenizer."""
    import pickle

    from mlx_lm.utils import load_tokenizer

    from server.prompt.render import PromptRenderer
    from server.request import ChatRequest
    from server.testing.scripts import WEATHER_TOOL
    from tests.conftest import tiny_model

    tokenizer = load_tokenizer(tiny_model())
    rendered = PromptRenderer(tokenizer, {}).render(
        ChatRequest(
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
        )
    )
    replica = pickle.loads(pickle.dumps(rendered)).constraint
    assert replica.tokenizer is None and replica.grammar == rendered.constraint.grammar
    matcher = replica.attach(tokenizer).new_matcher()
    opening = tokenizer.encode("<tool_call>", add_special_tokens=False)
    assert matcher.consume_tokens(opening)  # the grammar still holds the call's syntax
    assert not matcher.is_error()
    prose = replica.new_matcher()
    assert not prose.consume_tokens(tokenizer.encode("Hello there", add_special_tokens=False))
