"""Random tiny models on templates whose generation prompt opens `<think>` (every reply starts
in reasoning): the budget closes the reasoning, and sessions with thinking on keep hitting the
prefix cache on a plain (qwen2, trimmable KVCache) and a hybrid (qwen3_next, ArraysCache +
KVCache: exact checkpoints only) family: in a tool loop the reasoning sent back renders as the
model wrote it; after a new question the template drops it, and the hybrid resumes from its
checkpoint at the start of the previous reply's turn.
"""

from __future__ import annotations

import pytest

from server.testing.scripts import WEATHER_TOOL
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, MODEL, sse_events
from tests.worker.test_cache import anthropic_client, long_text, openai_client
from tests.worker.test_stream import check_grammar
from tests.worker.test_thinking import private_home

TEMPLATE = "qwen3_thinking"


@pytest.fixture(scope="module")
def random_thinker(tmp_path_factory):
    handle = start_worker(
        tiny_model(template=TEMPLATE),
        *("--max-output-tokens", "40"),
        env=private_home(tmp_path_factory),
        api_key=API_KEY,
    )
    yield handle
    assert handle.stop() == 0


def test_the_budget_closes_the_reasoning_and_the_answer_starts(random_thinker):
    import httpx

    body = {
        "model": MODEL,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "Think about it."}],
        "thinking": {"type": "enabled", "budget_tokens": 6},
        "stream": True,  # sampled at temperature 1: greedy, a random model repeats one token
    }
    for _ in range(3):  # sampled: now and then the answer ends at once (no text block)
        with httpx.stream(
            "POST",
            random_thinker.base_url + "/v1/messages",
            json=body,
            headers={"x-api-key": API_KEY},
            timeout=60,
        ) as r:
            assert r.status_code == 200
            events = sse_events(r)
        check_grammar(events)
        starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
        assert starts[:1] == ["thinking"], starts
        # One delta per reasoning token at most: the budget's 6 (a random model never closes it).
        thinking = [d for n, d in events if n == "content_block_delta" and d["index"] == 0]
        assert sum(d["delta"]["type"] == "thinking_delta" for d in thinking) <= 6
        if starts[:2] == ["thinking", "text"]:
            break
    assert starts[:2] == ["thinking", "text"], starts

    # OpenAI has no budget field: the cap keeps a quarter of the output limit for the answer,
    # here the worker's --max-output-tokens (the request sets none).
    # Sampled, a random model now and then ends its answer at once: one of three has text.
    answers = []
    for attempt in range(3):
        r = openai_client(random_thinker).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Think about it."}], seed=attempt
        )
        assert r.usage.completion_tokens <= 40
        assert r.usage.completion_tokens_details.reasoning_tokens <= 30 + 1  # and the end marker
        assert r.choices[0].message.model_extra["reasoning_content"]
        answers.append(r.choices[0].message.content)
        if answers[-1]:
            break
    assert any(answers), answers


def test_thinking_off_closes_the_reasoning_a_template_cannot_switch_off(random_thinker):
    """This template opens `<think>` whatever the switch says: the reasoning is closed at once,
    so the answer gets the whole output limit and nothing of it is hidden reasoning."""
    question = [{"role": "user", "content": "Answer at once."}]
    reply = anthropic_client(random_thinker).messages.create(
        model=MODEL, max_tokens=20, messages=question
    )
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text
    r = openai_client(random_thinker).chat.completions.create(
        model=MODEL, messages=question, max_tokens=20, reasoning_effort="none"
    )
    assert r.usage.completion_tokens_details.reasoning_tokens == 1  # the end marker, forced
    assert r.choices[0].message.content
    assert "reasoning_content" not in r.choices[0].message.model_extra


class ThinkingSession:
    """One conversation with thinking on: a question, then tool results, as Claude Code runs.
    Each reply's reasoning and text go back with a tool call; `turn` returns (cached, prompt)."""

    def __init__(self, protocol: str, system: str, questions: bool = False):
        self.protocol, self.system, self.questions = protocol, system, questions
        self.messages: list[dict] = [{"role": "user", "content": "List the files, then read them."}]

    def turn(self, handle, n: int) -> tuple[int, int]:
        call_id = f"toolu_{n:02d}"
        if self.protocol == "anthropic":
            reply = anthropic_client(handle).messages.create(
                model=MODEL,
                system=self.system,
                messages=self.messages,
                tools=[ANTHROPIC_TOOL],
                max_tokens=12,
                thinking={"type": "enabled", "budget_tokens": 1024},
            )
            blocks = [b.model_dump(exclude_none=True) for b in reply.content]
            assert blocks[0]["type"] == "thinking" and blocks[0]["signature"], blocks
            kept = [b for b in blocks if b["type"] in ("thinking", "text")]
            if self.questions:  # a chat: the next user question follows the answer
                self.messages += [
                    {"role": "assistant", "content": kept},
                    {"role": "user", "content": f"And question {n + 1}?"},
                ]
                u = reply.usage
                return u.cache_read_input_tokens, u.input_tokens + u.cache_read_input_tokens
            call = {
                "type": "tool_use",
                "id": call_id,
                "name": "get_weather",
                "input": {"city": str(n)},
            }
            result = {"type": "tool_result", "tool_use_id": call_id, "content": f"file {n} read"}
            self.messages += [
                {"role": "assistant", "content": [*kept, call]},
                {"role": "user", "content": [result]},
            ]
            u = reply.usage
            return u.cache_read_input_tokens, u.input_tokens + u.cache_read_input_tokens
        reply = openai_client(handle).chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": self.system}, *self.messages],
            tools=[WEATHER_TOOL],
            max_tokens=12,
            seed=n,  # sampled unseeded, a random model now and then closes its reasoning at once
        )
        message = reply.choices[0].message
        assert message.model_extra["reasoning_content"]
        function = {"name": "get_weather", "arguments": f'{{"city": "{n}"}}'}
        self.messages += [
            {
                "role": "assistant",
                "content": message.content,
                "reasoning_content": message.model_extra["reasoning_content"],
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": f"file {n} read"},
        ]
        return reply.usage.prompt_tokens_details.cached_tokens, reply.usage.prompt_tokens


def opening_tokens(model) -> int:
    """Tokens of the generation prompt that opens `<think>`: a hybrid's checkpoint is before it."""
    from mlx_lm.utils import load_tokenizer

    opening = "<|im_start|>assistant\n<think>\n"
    return len(load_tokenizer(model).encode(opening, add_special_tokens=False))


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "family, template",
    [("qwen2", TEMPLATE), ("qwen3_next", TEMPLATE), ("qwen3_next", "qwen35")],
)
def test_five_turn_thinking_session_reuses_90_percent(family, template, protocol, tmp_path_factory):
    model = tiny_model(family=family, template=template)
    handle = start_worker(model, env=private_home(tmp_path_factory), api_key=API_KEY)
    try:
        session = ThinkingSession(protocol, long_text(500, seed=31))
        cached, prompt = session.turn(handle, 1)
        assert cached == 0
        for n in range(2, 6):
            previous = prompt
            cached, prompt = session.turn(handle, n)
            assert cached >= 0.9 * prompt, (n, cached, prompt)
            # The whole previous prompt (but its last token, re-rendered) is a prefix of this
            # one: the reasoning sent back rendered to the tokens the model saw and wrote. A
            # hybrid's checkpoint sits before the generation prompt, which the reply follows.
            slack = opening_tokens(model) if family == "qwen3_next" else 1
            assert cached >= previous - slack, (n, cached, previous)
    finally:
        assert handle.stop() == 0


@pytest.mark.parametrize("family", ["qwen2", "qwen3_next"])
def test_new_questions_after_thinking_replies_reuse_90_percent(family, tmp_path_factory):
    """The template drops an answered turn's reasoning (and the `<think>` its prompt opened), so
    the next prompt leaves the previous one where the reply's turn began: a hybrid keeps a
    checkpoint exactly there."""
    model = tiny_model(family=family, template=TEMPLATE)
    handle = start_worker(model, env=private_home(tmp_path_factory), api_key=API_KEY)
    try:
        session = ThinkingSession("anthropic", long_text(500, seed=32), questions=True)
        cached, prompt = session.turn(handle, 1)
        for n in range(2, 6):
            previous = prompt
            if n == 3:  # a retry of the same request first: it must not move the checkpoint on
                retry = ThinkingSession("anthropic", session.system, questions=True)
                retry.messages = list(session.messages)
                assert retry.turn(handle, n)[0] >= previous - opening_tokens(model)
            cached, prompt = session.turn(handle, n)
            assert cached >= 0.9 * prompt, (n, cached, prompt)
            assert cached >= previous - opening_tokens(model), (n, cached, previous)
    finally:
        assert handle.stop() == 0


def test_claude_code_requests_on_a_thinking_model(claude_code_requests, tmp_path_factory):
    """Claude Code's captured requests (thinking enabled, display omitted) replayed on a thinking
    model: each stream opens with a thinking block that has no text, only a signature carrying
    the reasoning, and the stream grammar holds."""
    import httpx

    from tests.worker.test_stream import HOP_BY_HOP
    from tests.worker.test_thinking import carried

    handle = start_worker(
        tiny_model(layers=1, template=TEMPLATE),  # one layer: ~28K-token prefills in seconds
        *("--max-output-tokens", "32"),
        env=private_home(tmp_path_factory),
    )
    try:
        for captured in claude_code_requests:
            assert captured["body"]["thinking"]["display"] == "omitted"
            headers = {k: v for k, v in captured["headers"].items() if k.lower() not in HOP_BY_HOP}
            with httpx.stream(
                "POST",
                handle.base_url + captured["path"],
                headers=headers,
                json=captured["body"],
                timeout=180,
            ) as r:
                assert r.status_code == 200
                events = sse_events(r)
            check_grammar(events)
            first = next(d for n, d in events if n == "content_block_start")
            assert first["content_block"]["type"] == "thinking"
            deltas = [
                d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 0
            ]
            assert [d["type"] for d in deltas] == ["signature_delta"]
            assert carried(deltas[0]["signature"])  # the hidden reasoning, for the next turn
    finally:
        assert handle.stop() == 0
