"""One model over two ranks (`mlx.launch --backend ring -n 2` on loopback, tensor parallel):
the same greedy answers as one process over both SDKs, cancellation that frees every rank, and
a prefix cache that hits on every rank's shard."""

from __future__ import annotations

import time

import httpx
import pytest

from server.testing.scripts import SCRIPT, WEATHER_TOOL
from tests.fixtures_ranks import start_ranks
from tests.fixtures_worker import start_worker

API_KEY = "test-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MODEL = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Say hello."}]
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
ANTHROPIC_TOOL = {
    "name": WEATHER_TOOL["function"]["name"],
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
GREEDY = {"temperature": 0}  # the Anthropic SDK has no sampling arguments; the API takes it


def openai_client(handle):
    from openai import OpenAI

    return OpenAI(base_url=handle.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def anthropic_client(handle):
    from anthropic import Anthropic

    return Anthropic(base_url=handle.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def status(handle) -> dict:
    return httpx.get(handle.base_url + "/v1/status", headers=AUTH, timeout=30).json()


def answers(handle) -> list:
    """The scripted model's greedy replies: OpenAI text and tool call (with token counts),
    an Anthropic stream's text and tool_use."""
    out = []
    with openai_client(handle) as client:
        for messages, tools in [(HELLO, None), (PARIS, [WEATHER_TOOL])]:
            kwargs = {"tools": tools} if tools else {}
            r = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, **kwargs
            )
            message = r.choices[0].message
            calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
            out.append((message.content, calls, r.usage.completion_tokens))
    with anthropic_client(handle) as client:
        for messages in (HELLO, PARIS):
            with client.messages.stream(
                model=MODEL,
                max_tokens=64,
                messages=messages,
                tools=[ANTHROPIC_TOOL],
                extra_body=GREEDY,
            ) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            uses = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
            out.append((text, uses, final.usage.output_tokens))
    return out


def long_stream_cancelled(handle) -> None:
    """A stream of up to 4000 tokens (minutes here) closed after its third text chunk."""
    with openai_client(handle) as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a very long story."}],
            temperature=0,
            max_tokens=4000,
            stream=True,
        )
        chunks = 0
        for chunk in stream:
            chunks += bool(chunk.choices and chunk.choices[0].delta.content)
            if chunks >= 3:
                break
        stream.close()


@pytest.fixture(scope="module")
def single_answers(scripted_model_path):
    """The one-process worker's answers (it stops before the ranks start: two cores here)."""
    handle = start_worker(scripted_model_path, "--no-cache", api_key=API_KEY)
    try:
        return answers(handle)
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def ranks(scripted_model_path, single_answers):
    handle = start_ranks(scripted_model_path, "--max-output-tokens", "64", api_key=API_KEY)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def random_ranks(tiny_model_path):
    """Two ranks of the random-weight tiny model: its replies run until max_tokens."""
    handle = start_ranks(tiny_model_path, api_key=API_KEY)
    yield handle
    handle.stop()


def test_greedy_answers_over_both_apis_equal_the_single_process_ones(ranks, single_answers):
    assert status(ranks)["scheduler"]["mode"] == "batched"
    got = answers(ranks)
    assert got[0][0] == SCRIPT[0][2] and got[1][1] == [("get_weather", '{"city": "Paris"}')]
    assert got == single_answers
    ranks.stop()  # the next tests use the random model's ranks


@pytest.fixture(scope="module")
def pipeline_model_path(scripted_model_path, tmp_path_factory):
    """The scripted model with the weight index mlx-lm's pipeline loading picks files from."""
    import json
    import shutil

    import mlx.core as mx

    folder = tmp_path_factory.mktemp("pipeline") / "model"
    shutil.copytree(scripted_model_path, folder)
    names = mx.load(str(folder / "model.safetensors")).keys()
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "model.safetensors")}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_pipeline_stages_give_the_single_process_answers_too(pipeline_model_path, single_answers):
    split = ("--parallel", "pipeline", "--no-cache")
    handle = start_ranks(pipeline_model_path, *split, api_key=API_KEY)
    try:
        assert answers(handle) == single_answers
    finally:
        handle.stop()
    assert "rank 0 of 2, pipeline parallel" in handle.log()


def test_a_stream_cancelled_mid_way_frees_every_rank(random_ranks):
    ranks = random_ranks
    before = reply(ranks, "What is seven times six?")
    long_stream_cancelled(ranks)
    deadline = time.monotonic() + 120
    while status(ranks)["scheduler"]["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    after = status(ranks)
    assert after["scheduler"]["running"] == 0
    assert after["requests"]["cancelled"] >= 1
    # Rank 1 dropped the sequence too: a batch of different shapes would hang or garble this.
    assert reply(ranks, "What is seven times six?") == before


def reply(handle, question: str, max_tokens: int = 12, history: list | None = None):
    with openai_client(handle) as client:
        r = client.chat.completions.create(
            model=MODEL,
            messages=[*(history or []), {"role": "user", "content": question}],
            temperature=0,
            max_tokens=max_tokens,
        )
    return r.choices[0].message.content, r.usage.completion_tokens


def test_a_follow_up_is_a_cache_hit_on_every_rank(random_ranks):
    first = [{"role": "user", "content": "Tell me about the river. " * 20}]
    with openai_client(random_ranks) as client:
        r = client.chat.completions.create(model=MODEL, messages=first, temperature=0, max_tokens=8)
        history = [*first, {"role": "assistant", "content": r.choices[0].message.content}]
        before = status(random_ranks)["cache"]["ranks"]
        follow_up = client.chat.completions.create(
            model=MODEL,
            messages=[*history, {"role": "user", "content": "And the sea?"}],
            temperature=0,
            max_tokens=8,
        )
    cached = follow_up.usage.prompt_tokens_details.cached_tokens
    assert cached >= r.usage.prompt_tokens - 1
    after = status(random_ranks)["cache"]["ranks"]
    assert [row["rank"] for row in after] == [0, 1]
    for old, new in zip(before, after, strict=True):
        # Each rank's own shard held the prefix (the agreed length is the shortest of them).
        assert new["hits"] == old["hits"] + 1
        assert new["cached_tokens"] - old["cached_tokens"] >= cached
