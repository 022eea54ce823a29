"""Copies of the prompt as the model writes it back: a model whose tool calls are JSON writes a file
it read with every newline and quote escaped, and Claude Code's `Read` shows the file with a line
number before each line, which the model leaves out; either way copies of the prompt as it is
break at each line. The renderer gives requests their prompt's pieces as the model writes them;
copy drafts read them, the greedy tokens stay plain decoding's, and a reply that copies the file
verifies far more tokens a step."""

from __future__ import annotations

import json

import pytest

from server.request import ChatRequest
from tests.server.speculative.test_solo_drafting import decode, forced

FILE = "\n".join(
    f'def f{i}(x):\n    """Step {i}: "x" times {i}."""\n    return x * {i} + f{i - 1}(x)\n'
    for i in range(1, 9)
)
WRITE = {"name": "Write", "description": "Write a file", "parameters": {"type": "object"}}
READ = {"name": "Read", "description": "Read a file", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


def request(tools: bool = True, read: str = FILE) -> ChatRequest:
    call = {"id": "c1", "type": "function", "function": {"name": "Read", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Rewrite a.py with f9 added."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": read},
    ]
    listed = [{"type": "function", "function": t} for t in (READ, WRITE)] if tools else None
    return ChatRequest(messages=messages, tools=listed, max_tokens=400)


def holds(tokens: list[int], run: list[int]) -> bool:
    return any(tokens[i : i + len(run)] == run for i in range(len(tokens) - len(run) + 1))


def drafted(loaded, prompt: list[int], reply: str, views):
    """The tokens of a forced `reply` after `prompt`, and the draft record of copy drafts that
    also read `views` (None: plain decoding, no record)."""
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    steps = len(loaded.tokenizer.encode(reply)) + 1
    drafting = None if views is None else Drafting("copy", prompt, CostModel(), views=views)
    tokens, _, _ = decode(loaded, prompt, steps, processors=[forced(loaded, reply)],
                          drafting=drafting)  # fmt: skip
    return tokens, drafting.record if drafting else None


def test_tool_requests_carry_the_prompts_pieces_escaped(loaded):
    from server.prompt.copy_views import writes_json_calls
    from server.prompt.render import PromptRenderer

    assert writes_json_calls(loaded.tokenizer)  # the tiny model's Hermes `<tool_call>` JSON
    renderer = PromptRenderer(loaded.tokenizer, {}, copy_views=True)
    rendered = renderer.render(request())
    views = rendered.copy_views
    escaped = loaded.tokenizer.encode(json.dumps(FILE)[1:-1], add_special_tokens=False)
    inner = escaped[2:-2]  # the piece holds the template's text around the file
    assert any(holds(view, inner) for view in views)
    assert not holds(rendered.tokens, inner)  # the prompt holds the file unescaped
    assert renderer.render(request(tools=False)).copy_views == []  # no call to write
    assert PromptRenderer(loaded.tokenizer, {}).render(request()).copy_views == []  # drafts off


def test_a_write_of_a_file_read_copies_it_escaped_with_plain_decodings_tokens(loaded):
    from server.prompt.render import PromptRenderer

    rendered = PromptRenderer(loaded.tokenizer, {}, copy_views=True).render(request())
    content = json.dumps(FILE + "\ndef f9(x):\n    return x * 9\n")
    reply = f'<tool_call>\n{{"name": "Write", "arguments": {{"content": {content}}}}}\n</tool_call>'
    prompt = list(rendered.tokens)
    plain, _ = drafted(loaded, prompt, reply, None)
    tokens_raw, raw = drafted(loaded, prompt, reply, ())
    tokens_escaped, escaped = drafted(loaded, prompt, reply, rendered.copy_views)
    assert tokens_raw == plain and tokens_escaped == plain
    assert raw is not None and escaped is not None
    per_step = {n: r.verified_tokens / r.verify_steps for n, r in (("raw", raw), ("esc", escaped))}
    assert per_step["esc"] > 2 * per_step["raw"], per_step  # whole lines at once, not words
    assert escaped.verify_steps < raw.verify_steps / 2


def numbered(text: str) -> str:
    """The file as Claude Code's `Read` shows it: `12\tcode`, a bare number on an empty line."""
    return "\n".join(
        f"{i}\t{line}" if line else str(i) for i, line in enumerate(text.split("\n"), 1)
    )


def test_line_numbers_come_off_a_file_read_and_only_off_one():
    from server.prompt.copy_views import without_line_numbers

    assert without_line_numbers(numbered(FILE)) == FILE
    older = "\n".join(f"{i:6}\u2192{line}" for i, line in enumerate(FILE.split("\n"), 1))
    assert without_line_numbers(older) == FILE  # older Claude Code: `     12→code`
    assert without_line_numbers("Version 2\nSee 3 more\n" + FILE) is None  # no numbered file


def test_a_reply_copying_a_numbered_read_copies_it_without_the_numbers(loaded):
    from server.prompt.render import PromptRenderer

    renderer = PromptRenderer(loaded.tokenizer, {}, copy_views=True)
    rendered = renderer.render(request(tools=False, read=numbered(FILE)))
    assert rendered.copy_views  # no tools: the file without its numbers, not escaped
    reply = "Here it is again:\n" + FILE
    prompt = list(rendered.tokens)
    plain, _ = drafted(loaded, prompt, reply, None)
    tokens_raw, raw = drafted(loaded, prompt, reply, ())
    tokens_bare, bare = drafted(loaded, prompt, reply, rendered.copy_views)
    assert tokens_raw == plain and tokens_bare == plain
    assert raw is not None and bare is not None
    assert bare.verified_tokens / bare.verify_steps > 2 * raw.verified_tokens / raw.verify_steps


def test_a_patch_quoting_the_file_copies_its_marked_lines(loaded):
    """Codex's `apply_patch` quotes the lines it keeps and removes with ` ` or `-` first: with
    the marked views a patch verifies more tokens a step, with plain decoding's tokens."""
    from server.prompt.render import PromptRenderer

    patch_tool = {"name": "apply_patch", "description": "Patch", "parameters": {"type": "object"}}
    body = request()
    body.tools = [{"type": "function", "function": t} for t in (READ, patch_tool)]
    renderer = PromptRenderer(loaded.tokenizer, {}, copy_views=True)
    rendered = renderer.render(body)
    assert renderer.views is not None
    unmarked = renderer.views(rendered.text, True, patches=False)
    assert len(rendered.copy_views) > len(unmarked)  # the marked lines, escaped
    lines = FILE.split("\n")
    hunk = [" " + line for line in lines[:8]] + ["-" + lines[8], "+    return 0"]
    hunk += [" " + line for line in lines[9:16]]
    patch = "\n".join(["*** Begin Patch", "*** Update File: a.py", "@@", *hunk, "*** End Patch"])
    call = json.dumps({"name": "apply_patch", "arguments": {"input": patch}})
    reply = f"<tool_call>\n{call}\n</tool_call>"
    prompt = list(rendered.tokens)
    plain, _ = drafted(loaded, prompt, reply, None)
    tokens_unmarked, unmarked_run = drafted(loaded, prompt, reply, unmarked)
    tokens_marked, marked_run = drafted(loaded, prompt, reply, rendered.copy_views)
    assert tokens_unmarked == plain and tokens_marked == plain
    assert unmarked_run is not None and marked_run is not None
    per_step = {
        name: r.verified_tokens / r.verify_steps
        for name, r in (("unmarked", unmarked_run), ("marked", marked_run))
    }
    assert per_step["marked"] > 1.5 * per_step["unmarked"], per_step
