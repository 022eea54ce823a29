"""Captured Codex 0.171.0 sessions (tests/fixtures/codex-0.171.0/) render to prompts that share
their prefix: follow-ups extend the previous prompt, and a new session in another directory
shares the whole system turn (instructions, skills, permissions) and the tools; what changes
(cwd, date, ids) sits in the first user turn or is never rendered."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO_ROOT

SESSIONS = REPO_ROOT / "tests" / "fixtures" / "codex-0.171.0"


def requests(session: str) -> list[dict]:
    folder = SESSIONS / session
    return [json.loads((folder / name).read_text()) for name in sorted(os.listdir(folder))]


@pytest.fixture(scope="module")
def render(tiny_model_path):
    from server.api.responses.protocol import ResponsesRequest, to_chat_request
    from server.model.loading import load_model
    from server.prompt.normalize import normalize
    from server.prompt.render import PromptRenderer

    renderer = PromptRenderer(load_model(str(tiny_model_path)).tokenizer, {})
    return lambda body: renderer.render(
        normalize(to_chat_request(ResponsesRequest.model_validate(body))), check_context=False
    )


def cwd(body: dict) -> str:
    """The working directory in the request's `<environment_context>`."""
    text = json.dumps(body["input"])
    return text.split("<cwd>", 1)[1].split("</cwd>", 1)[0]


def shared(a: list[int], b: list[int]) -> int:
    pairs = enumerate(zip(a, b, strict=False))
    return next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


def test_each_follow_up_extends_the_prompt_before_it(render):
    prompts = [render(r["body"]) for r in requests("exec-shell-session")]
    assert len(prompts) == 4  # two turns: a shell call, then the answer, each
    for before, after in zip(prompts, prompts[1:], strict=False):
        # All of the previous prompt: the next one renders the reply and what followed after it.
        assert shared(before.tokens, after.tokens) == len(before.tokens)


def test_a_new_session_shares_the_system_turn_and_tools(render):
    first, other = requests("exec-shell-session")[0], requests("second-session")[0]
    a, b = render(first["body"]), render(other["body"])
    assert a.system_len == b.system_len > 0.95 * len(a.tokens)
    assert shared(a.tokens, b.tokens) >= a.system_len
    # They differ only where Codex says where it runs (the first user turn), never in ids.
    cwd_a, cwd_b = cwd(first["body"]), cwd(other["body"])
    assert cwd_a != cwd_b and a.text.replace(cwd_a, cwd_b) == b.text
    for volatile in (first["body"]["prompt_cache_key"], first["body"]["input"][0]["id"]):
        assert volatile not in a.text
