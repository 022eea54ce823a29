"""Many requests at once on a real worker: batched decoding, cancellation, shared prefills,
keep-alives while queued and a full queue, through the official SDKs and raw SSE."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import wait_until
from tests.fixtures_worker import start_worker
from tests.worker.test_cache import long_text

API_KEY = "test-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
QUESTIONS = [
    "Tell me about the river.",
    "What is seven times six?",
    "Write a short poem about rain.",
    "List three colours.",
]


def openai_client(handle):
    from openai import OpenAI

    return OpenAI(base_url=handle.base_url + "/v1", api_key=API_KEY, max_retries=0)


def anthropic_client(handle):
    from anthropic import Anthropic

    return Anthropic(base_url=handle.base_url, api_key=API_KEY, max_retries=0)


def status(handle) -> dict:
    return httpx.get(handle.base_url + "/v1/status", headers=AUTH).json()


@pytest.fixture(scope="module")
def batch_worker(tiny_model_path):
    # Short turns: a prompt arriving while others decode prefills within 0.2 s, well before a
    # few-hundred-token reply ends on any machine (the default turn is 1 s).
    # Two prefill streams whatever this machine's cores, in chunks short enough to take turns.
    handle = start_worker(
        tiny_model_path,
        *("--no-cache", "--turn-seconds", "0.2"),
        *("--prefill-streams", "2", "--prefill-step-size", "512"),
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def stream_text(
    handle, question: str, max_tokens: int = 24, streaming: threading.Event | None = None
) -> tuple[str, int]:
    """The greedy streamed reply and its completion tokens (OpenAI SDK); `streaming` is set on
    its first text."""
    with openai_client(handle) as client:
        chunks = client.chat.completions.create(
            model="claude-x",
            messages=[{"role": "user", "content": question}],
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, completion = "", 0
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                if streaming is not None:
                    streaming.set()
            if chunk.usage:
                completion = chunk.usage.completion_tokens
        return text, completion


def test_concurrent_streams_give_the_greedy_text_of_one_by_one(batch_worker):
    # Replies of a few hundred tokens; the rest arrive while the first decodes (its greedy reply
    # runs to max_tokens), so they join a running batch whatever this machine's speed.
    alone = [stream_text(batch_worker, q, 400) for q in QUESTIONS]
    assert alone[0][1] == 400
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        # The rest start on the first's first text: a status poll can answer late.
        streaming = threading.Event()
        first = pool.submit(stream_text, batch_worker, QUESTIONS[0], 400, streaming)
        assert streaming.wait(60)
        rest = list(pool.map(lambda q: stream_text(batch_worker, q, 400), QUESTIONS[1:]))
        together = [first.result(), *rest]
    assert together == alone
    assert sum(n for _, n in alone) > len(QUESTIONS)  # real replies, not empty ones
    scheduler = status(batch_worker)["scheduler"]
    assert scheduler["mode"] == "batched"
    assert scheduler["peak_batch_size"] >= 2  # they did decode together
    assert status(batch_worker)["batch_capacity"] > 1


def test_long_prompts_sent_at_once_prefill_together_and_reply_as_one_by_one(batch_worker):
    # Two prompts of a few thousand tokens that share no prefix: chunks of both run at once.
    prompts = [long_text(2500, seed=11) + " Summarise.", long_text(2500, seed=12) + " Go on."]
    alone = [stream_text(batch_worker, p, 16) for p in prompts]
    before = status(batch_worker)["scheduler"]["chunks_prefilled_together"]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: stream_text(batch_worker, p, 16), prompts))
    assert together == alone
    assert alone[0] != alone[1] and all(n == 16 for _, n in alone)
    scheduler = status(batch_worker)["scheduler"]
    assert scheduler["prefill_streams"] == 2
    assert scheduler["chunks_prefilled_together"] > before  # both prompts' chunks ran at once


def test_the_turn_length_is_a_flag_and_a_bad_one_a_usage_error(tiny_model_path):
    handle = start_worker(tiny_model_path, "--no-cache", "--turn-seconds", "0.25")
    try:
        assert status(handle)["scheduler"]["turn_seconds"] == 0.25
    finally:
        handle.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "server", "--model", str(tiny_model_path), "--turn-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--turn-seconds" in bad.stderr


def test_a_cancelled_member_frees_its_slot_and_the_others_finish(batch_worker):
    survivor = QUESTIONS[2]
    # Long enough (seconds) that a status poll on a loaded machine still sees both running.
    expected = stream_text(batch_worker, survivor, max_tokens=3000)
    body = {
        "model": "claude-x",
        "messages": [{"role": "user", "content": QUESTIONS[0]}],
        "max_tokens": 20000,  # ~30 s here: it can only end early by being cancelled
        "temperature": 0.0,
        "stream": True,
    }
    with ThreadPoolExecutor(1) as pool:
        with httpx.stream(
            "POST", batch_worker.base_url + "/v1/chat/completions", json=body, headers=AUTH
        ) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if '"content"' in line and '""' not in line)
            other = pool.submit(stream_text, batch_worker, survivor, 3000)
            while status(batch_worker)["scheduler"]["running"] < 2 and not other.done():
                time.sleep(0.01)
            assert not other.done()  # both were in the batch
        # The client left mid-reply: its slot is freed while the other still decodes.
        assert other.result(timeout=120) == expected
    deadline = time.monotonic() + 5
    while status(batch_worker)["scheduler"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status(batch_worker)["scheduler"]["running"] == 0
    assert status(batch_worker)["requests"]["cancelled"] >= 1


def test_requests_sharing_an_uncached_prefix_prefill_it_once(tiny_model_path):
    handle = start_worker(tiny_model_path, "--prefill-step-size", "256", api_key=API_KEY)
    system = long_text(6000, seed=5)
    body = {"model": "claude-x", "max_tokens": 8, "system": system}
    first = {**body, "messages": [{"role": "user", "content": "First question here."}]}
    other = {**body, "messages": [{"role": "user", "content": "A different one."}]}
    clients = [anthropic_client(handle), anthropic_client(handle)]  # built before: slow
    try:
        with httpx.stream(
            "POST",
            handle.base_url + "/v1/messages",
            json={**first, "stream": True},
            headers={**AUTH, "anthropic-version": "2023-06-01"},
        ) as r:
            lines = r.iter_lines()
            for line in lines:
                if line == "event: message_start":  # admitted: its prefill is under way
                    break
            with ThreadPoolExecutor(2) as pool:
                # Another session on the same system prompt, and a retry of the first.
                futures = [
                    pool.submit(c.messages.create, **b)
                    for c, b in zip(clients, (other, first), strict=True)
                ]
                usages = [f.result(timeout=120).usage for f in futures]
            assert any(line == "event: message_stop" for line in lines)
        shared, retry = usages
        total = shared.input_tokens + shared.cache_read_input_tokens
        # The second session starts from the first's state: only its own turn is new.
        assert shared.cache_read_input_tokens >= total - 16
        # The retry attaches to the prefill it repeats: all but the last token come cached.
        assert retry.input_tokens == 1
        assert "waits for the prefill of" in handle.log()
    finally:
        handle.stop()


def test_a_prompt_admitted_while_a_reply_decodes_finds_that_replys_prompt_cached(
    tiny_model_path,
):
    # A prompt's end state is stored off its reply's path (once the reply ends, or has run a
    # while), but a prompt admitted meanwhile (here a retry) must still find it.
    handle = start_worker(tiny_model_path, "--turn-seconds", "0.2", api_key=API_KEY)
    body = {
        "model": "claude-x",
        "system": long_text(1500, seed=7),
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }
    client = anthropic_client(handle)  # built before: slow
    try:
        with httpx.stream(
            "POST",
            handle.base_url + "/v1/messages",
            # Greedy: the same long reply on every run (a sampled one could end in a few tokens).
            json={**body, "max_tokens": 1500, "stream": True, "temperature": 0},
            headers={**AUTH, "anthropic-version": "2023-06-01"},
        ) as r:
            lines = r.iter_lines()
            for line in lines:
                if line == "event: content_block_delta":  # decoding
                    break
            retry = client.messages.create(**body, max_tokens=4)
            assert any(line == "event: message_stop" for line in lines)
        assert retry.usage.input_tokens == 1  # all but the prompt's last token came cached

        # The retry finished while the first reply was still decoding (access lines are written
        # as each response closes: the first's may come a moment after its last event).
        def completions() -> list[int]:
            finished = re.findall(r"POST /v1/messages 200 .* completion=(\d+)", handle.log())
            return [int(n) for n in finished]

        assert wait_until(lambda: len(completions()) == 2), handle.log()
        done = completions()
        assert done[0] <= 4 < done[1], done
    finally:
        handle.stop()


def test_a_queued_stream_pings_at_once_and_a_full_queue_is_turned_away(tiny_model_path):
    # The first request blocks the generation thread (test hook): everything else queues.
    handle = start_worker(
        tiny_model_path,
        "--no-cache",
        "--max-queue",
        "1",
        api_key=API_KEY,
        env={"MLXCTL_TEST_HANG_AT_BEAT": "1"},
    )
    headers = {**AUTH, "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-x",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    try:

        def send_stuck():
            with contextlib.suppress(httpx.HTTPError):  # the worker is killed under it
                httpx.post(handle.base_url + "/v1/messages", json=body, headers=headers, timeout=30)

        stuck = threading.Thread(target=send_stuck, daemon=True)
        stuck.start()
        while status(handle)["scheduler"]["running"] < 1:  # in the batch, stuck in its step
            time.sleep(0.02)
        with httpx.stream(
            "POST", handle.base_url + "/v1/messages", json=body, headers=headers, timeout=30
        ) as r:
            sent = time.monotonic()
            lines = r.iter_lines()  # one iterator: dropping it would close the stream
            first = next(line for line in lines if line.startswith("event:"))
            waited = time.monotonic() - sent
            assert first == "event: ping"  # queued: a keep-alive before message_start
            assert waited < 2.0
            body = {**body, "stream": False}
            full = httpx.post(
                handle.base_url + "/v1/messages", json=body, headers=headers, timeout=10
            )
            assert full.status_code == 529
            assert full.json()["error"]["type"] == "overloaded_error"
            assert int(full.headers["retry-after"]) >= 1
            full = httpx.post(
                handle.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10
            )
            assert full.status_code == 429 and "retry-after" in full.headers
    finally:
        handle.process.kill()  # its generation thread never returns
        handle.process.wait(10)


def test_a_non_stream_request_queued_past_its_deadline_is_turned_away(tiny_model_path):
    """One decode slot, held by a long stream: a non-stream request waits, then gets 529/429
    with retry-after at the queue deadline; the stream goes on untouched."""
    import anthropic
    import openai

    handle = start_worker(
        tiny_model_path,
        "--no-cache",
        "--decode-concurrency",
        "1",
        "--queue-timeout",
        "2",
        api_key=API_KEY,
    )
    # The stream must outlast two 2 s deadlines on any machine: 12000 tokens are ~15 s here.
    reply = 12000
    clients = anthropic_client(handle), openai_client(handle)  # built before: slow
    try:
        done: list[tuple[str, int]] = []
        long = threading.Thread(
            target=lambda: done.append(stream_text(handle, QUESTIONS[0], max_tokens=reply))
        )
        long.start()
        while status(handle)["scheduler"]["batch_size"] < 1:
            time.sleep(0.02)
        assert status(handle)["batch_capacity"] == 1
        hello = [{"role": "user", "content": "hi"}]
        sent = time.monotonic()
        with clients[0] as client, pytest.raises(anthropic.APIStatusError) as err:
            client.messages.create(model="claude-x", max_tokens=8, messages=hello)
        assert time.monotonic() - sent >= 2.0
        assert err.value.status_code == 529
        assert int(err.value.response.headers["retry-after"]) >= 1
        with clients[1] as client, pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="claude-x", max_tokens=8, messages=hello)
        assert "retry-after" in err.value.response.headers
        assert status(handle)["scheduler"]["running"] == 1  # the stream still decodes
        long.join(300)
        assert done and done[0][1] == reply
        assert status(handle)["scheduler"]["waiting"] == 0
    finally:
        handle.stop()
