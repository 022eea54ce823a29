"""Batched decoding on the models whose caches cannot be trimmed: hybrid (qwen3_next: ArraysCache
+ KVCache) and sliding-window (gemma3_text: a RotatingKVCache far shorter than the prompts and
replies). Concurrent requests decode in one batch and get the greedy text each gets alone, and a
follow-up turn sent while another conversation decodes still starts from its checkpoint.

Real workers on tiny random models, the official SDKs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_batch import openai_client, status, stream_text
from tests.worker.test_cache import long_text
from tests.worker.test_cache_models import FAMILIES, Session

WINDOW = 64  # build_tiny_model's sliding window: every prompt below is longer
# Different questions after fillers of different lengths (about 100 to 300 tokens).
QUESTIONS = [
    long_text(60, seed=1) + " Tell me about the river.",
    long_text(100, seed=2) + " What is seven times six?",
    long_text(140, seed=3) + " Write a short poem about rain.",
    long_text(200, seed=4) + " List three colours.",
]
# While replies decode, a new prompt waits up to one turn (server.engine.turns.SLICE_S, 1 s):
# replies must outlast that to overlap (~0.15 s per 32 tokens here).
MAX_TOKENS = 800


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def batch_worker(family):
    # No prefix cache: the requests sent together prefill from scratch, as they did alone.
    handle = start_worker(tiny_model(family=family), "--no-cache", api_key=API_KEY)
    yield handle
    handle.stop()


def test_concurrent_streams_decode_together_and_give_the_greedy_text_alone(batch_worker):
    # Both families' caches merge (batch_limits.cannot_batch): no one-at-a-time fallback.
    assert status(batch_worker)["scheduler"]["mode"] == "batched"
    alone = [stream_text(batch_worker, q, MAX_TOKENS) for q in QUESTIONS]
    assert status(batch_worker)["scheduler"]["peak_batch_size"] == 1  # one by one so far
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: stream_text(batch_worker, q, MAX_TOKENS), QUESTIONS))
    assert [n for _, n in alone] == [MAX_TOKENS] * len(QUESTIONS)  # past the window
    # Random weights repeat themselves (qwen3_next nearly one word), but each question gets its
    # own text: a member given another's state or tokens shows.
    assert len({text for text, _ in alone}) == len(QUESTIONS)
    for i, (got, want) in enumerate(zip(together, alone, strict=True)):
        assert got == want, (i, _diverges_at(got[0], want[0]))
    assert status(batch_worker)["scheduler"]["peak_batch_size"] >= 2  # they decoded together


def _diverges_at(a: str, b: str) -> tuple[int, str, str]:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return i, a[max(0, i - 20) : i + 20], b[max(0, i - 20) : i + 20]


def test_a_follow_up_sent_while_another_conversation_decodes_reuses_its_checkpoint(family):
    handle = start_worker(tiny_model(family=family), api_key=API_KEY)
    try:
        session = Session("anthropic", long_text(300, seed=31))
        cached, prompt = session.ask(handle, "List the files.")
        assert cached == 0 and prompt > 4 * WINDOW
        with openai_client(handle) as client:
            # Another conversation streams (its own long prompt) until it is closed below.
            other = client.chat.completions.create(
                model="claude-x",
                messages=[{"role": "user", "content": long_text(250, seed=32) + " Go on."}],
                max_tokens=20000,  # ~40 s alone: it ends by being closed
                temperature=0.0,
                stream=True,
            )
            with other:
                chunks = iter(other)
                assert next(c for c in chunks if c.choices and c.choices[0].delta.content)
                for turn in (1, 2):
                    cached, prompt = session.ask(handle, f"Now read file {turn}.")
                    # The batch path stored its checkpoints: the turn starts from the last one.
                    assert cached >= 0.9 * prompt, (turn, cached, prompt)
                    scheduler = status(handle)["scheduler"]
                    assert scheduler["running"] >= 1  # the other conversation still decodes
                assert scheduler["peak_batch_size"] >= 2  # the follow-ups decoded beside it
    finally:
        handle.stop()
