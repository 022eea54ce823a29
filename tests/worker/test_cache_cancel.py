"""A reply the client cancels mid-answer (Esc in Claude Code, a stream closed early) keeps its
prompt's KV state in the prefix cache, as a finished reply does: the next turn of that
conversation, which holds the cancelled prompt as its prefix, prefills only what is new.

Real workers on tiny random models, the official OpenAI SDK closing its streams early.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import tiny_model, wait_until
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import AUTH, MODEL, clear, long_text, openai_client

LONG_REPLY = 20000  # only a cancel ends it within a test's time


def status(handle) -> dict:
    return httpx.get(handle.base_url + "/v1/status", headers=AUTH).json()["scheduler"]


def entry_sizes(handle) -> list[int]:
    r = httpx.get(handle.base_url + "/v1/cache", headers=AUTH)
    return sorted(e["tokens"] for e in r.json()["entries"])


def prompt_tokens(handle, messages: list[dict]) -> int:
    """The prompt's length, measured by a one-token reply whose entry is then dropped."""
    reply = openai_client(handle).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=1
    )
    clear(handle)
    return reply.usage.prompt_tokens


@contextmanager
def decoding(handle, messages: list[dict], **extra) -> Iterator[None]:
    """A greedy streamed reply that has started decoding (its first text is in); the client
    closes the stream when the block ends."""
    stream = openai_client(handle).chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=LONG_REPLY,
        temperature=0.0,
        stream=True,
        **extra,
    )
    try:
        next(c for c in stream if c.choices and c.choices[0].delta.content)
        yield
    finally:
        stream.close()


def ask(handle, messages: list[dict]) -> tuple[str, int]:
    """The greedy text and its cached prompt tokens."""
    reply = openai_client(handle).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, temperature=0.0
    )
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens_details.cached_tokens


def follow_up(handle, messages: list[dict]) -> tuple[str, int]:
    """The next turn after the cancelled reply."""
    turn = [*messages, {"role": "assistant", "content": "Stopped."}]
    return ask(handle, [*turn, {"role": "user", "content": "Go on, briefly."}])


def check_kept(handle, messages: list[dict], n_prompt: int) -> None:
    """The cancelled prompt's entry (all but its last token) is stored at once, the next turn
    starts from it, and its text is a cold prefill's."""
    assert wait_until(lambda: n_prompt - 1 in entry_sizes(handle)), entry_sizes(handle)
    warm, cached = follow_up(handle, messages)
    assert cached >= n_prompt - 1
    clear(handle)
    cold, cached_cold = follow_up(handle, messages)
    assert cached_cold == 0 and warm == cold


def check_retry_kept(handle, messages: list[dict], n_prompt: int, **extra) -> None:
    """The same prompt sent again starts from its entry and prefills nothing (no end checkpoint
    is stored): cancelled once its entry is gone, its own decode's state is stored."""
    with decoding(handle, messages, **extra):
        clear(handle)
    assert wait_until(lambda: n_prompt - 1 in entry_sizes(handle)), entry_sizes(handle)


@pytest.fixture(scope="module")
def worker():
    handle = start_worker(
        tiny_model(),
        *("--cache-disk-bytes", "0", "--turn-seconds", "0.2", "--prefill-step-size", "512"),
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def test_a_reply_cancelled_alone_keeps_its_prompt(worker):
    messages = [{"role": "user", "content": long_text(1200, seed=41) + " Summarise."}]
    n_prompt = prompt_tokens(worker, messages)
    with decoding(worker, messages):
        assert status(worker)["decoding_alone"]
    check_kept(worker, messages, n_prompt)
    check_retry_kept(worker, messages, n_prompt)


def test_a_batch_member_cancelled_keeps_its_prompt(worker):
    messages = [{"role": "user", "content": long_text(1200, seed=42) + " Summarise."}]
    other = [{"role": "user", "content": "Tell me about the river."}]
    n_prompt = prompt_tokens(worker, messages)
    with decoding(worker, other):  # decodes throughout: the cancelled one joins its batch
        with decoding(worker, messages):
            scheduler = status(worker)
            assert scheduler["batch_size"] == 2 and not scheduler["decoding_alone"]
        # The other goes on decoding while the cancelled one's state is stored.
        assert wait_until(lambda: n_prompt - 1 in entry_sizes(worker)), entry_sizes(worker)
        assert status(worker)["batch_size"] == 1
        check_retry_kept(worker, messages, n_prompt)  # its state taken out of the batch
    check_kept(worker, messages, n_prompt)


def test_a_reply_cancelled_on_the_one_at_a_time_path_keeps_its_prompt(worker):
    messages = [{"role": "user", "content": long_text(1200, seed=43) + " Summarise."}]
    n_prompt = prompt_tokens(worker, messages)
    with decoding(worker, messages, seed=7):  # a seed runs alone, outside the batch
        pass
    check_kept(worker, messages, n_prompt)
    check_retry_kept(worker, messages, n_prompt, seed=7)


def test_a_hybrid_reply_cancelled_mid_answer_or_mid_prefill_keeps_its_checkpoints():
    handle = start_worker(
        tiny_model(family="qwen3_next"),
        *("--cache-disk-bytes", "0", "--prefill-step-size", "128"),
        api_key=API_KEY,
    )
    system = {"role": "system", "content": long_text(60, seed=44)}
    messages = [system, {"role": "user", "content": long_text(1200, seed=45) + " Summarise."}]
    other_question = [system, {"role": "user", "content": "Hi."}]
    try:
        n_prompt = prompt_tokens(handle, messages)
        with decoding(handle, messages):
            pass
        check_kept(handle, messages, n_prompt)  # the prefill's end checkpoint, no bad state

        # Cancelled during its prefill: the checkpoint it passed (the system prompt's end) stays.
        clear(handle)
        long_prompt = [system, {"role": "user", "content": long_text(9000, seed=46)}]
        n_long = prompt_tokens(handle, long_prompt)
        body = {"model": MODEL, "max_tokens": 8, "stream": True, "system": system["content"]}
        with httpx.stream(
            "POST",
            handle.base_url + "/v1/messages",
            json={**body, "messages": long_prompt[1:]},
            headers={**AUTH, "anthropic-version": "2023-06-01"},
        ) as r:
            pings = (line for line in r.iter_lines() if line == "event: ping")
            next(pings), next(pings)  # after message_start, then the first chunk's progress
        assert wait_until(lambda: status(handle)["running"] == 0)
        # Cut short: the system checkpoint and its state so far for a retry (one entry when it
        # stopped right there), never the prompt's end.
        assert entry_sizes(handle) and max(entry_sizes(handle)) < n_long - 1, entry_sizes(handle)
        warm, cached = ask(handle, other_question)
        assert 0 < cached == min(entry_sizes(handle))
        clear(handle)
        assert ask(handle, other_question) == (warm, 0)
    finally:
        handle.stop()
