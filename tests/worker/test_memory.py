"""Admission under memory pressure on a real worker: requests that do not fit wait, none fails."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures_worker import start_worker

API_KEY = "test-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MAX_TOKENS = 48
QUESTIONS = ["Tell me about the river.", "What is seven times six?", "List three colours."]


@pytest.fixture(scope="module")
def tight_worker(tiny_model_path):
    # The tiny model's KV is 512 B/token: a request here is ~40 KB (prompt plus whole reply),
    # so a 60 KB budget holds one at a time and the others must wait.
    handle = start_worker(
        tiny_model_path,
        "--no-cache",
        "--kv-budget-bytes",
        "60000",
        "--turn-seconds",
        "0.2",
        api_key=API_KEY,
    )
    yield handle
    handle.stop()


def status(handle) -> dict:
    return httpx.get(handle.base_url + "/v1/status", headers=AUTH).json()["scheduler"]


def stream(handle, question: str) -> tuple[str, int, str | None]:
    from openai import OpenAI

    with OpenAI(base_url=handle.base_url + "/v1", api_key=API_KEY, max_retries=0) as client:
        chunks = client.chat.completions.create(
            model="claude-x",
            messages=[{"role": "user", "content": question}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, tokens, finish = "", 0, None
        for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
    return text, tokens, finish


def test_requests_past_the_kv_budget_wait_and_all_complete(tight_worker):
    memory = status(tight_worker)["memory"]
    assert memory["kv_budget_bytes"] == 60000 and memory["kv_bytes_per_token"] > 0
    alone = [stream(tight_worker, q) for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS) * 2) as pool:
        together = list(pool.map(lambda q: stream(tight_worker, q), QUESTIONS * 2))
    # Every request finished with the text it gets alone (greedy): waiting changed nothing.
    assert together == alone * 2
    assert all(finish in ("stop", "length") and tokens > 0 for _, tokens, finish in together)
    after = status(tight_worker)
    assert after["memory"]["waited_for_memory"] >= 1
    assert after["peak_batch_size"] == 1  # never two at once: two do not fit the budget
