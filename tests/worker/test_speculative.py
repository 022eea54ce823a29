"""Speculative decoding in a real worker: the same greedy replies with copy drafts as without,
over both APIs, streamed and not, on a plain KV model and a hybrid one; a hybrid's next turn from
its cache after drafting equals a cold prefill; a forced tool call stays schema-valid; the figures
show on /v1/status and /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from server.testing.scripts import WEATHER_TOOL
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, REPO_ROOT, start_worker
from tests.worker.test_cache import AUTH, MODEL, anthropic_client, clear, openai_client

CODE = "\n".join(f"def f{i}(x):\n    return x * {i} + f{i - 1}(x)\n" for i in range(1, 9))
GREEDY = {"temperature": 0}  # the Anthropic SDK has no sampling arguments
ASK = "Repeat the functions above, then add f9 the same way."


@pytest.fixture(scope="module", params=["qwen2", "qwen3_next"])
def workers(request):
    """(drafting worker, plain worker) on the same tiny model."""
    model = tiny_model(family=request.param)
    copy = start_worker(model, "--speculative", "copy", api_key=API_KEY)
    try:
        plain = start_worker(model, "--speculative", "off", api_key=API_KEY)
    except Exception:
        copy.stop()
        raise
    yield copy, plain
    copy.stop()
    plain.stop()


def reply(handle, protocol: str, stream: bool, messages: list[dict], max_tokens: int = 48) -> str:
    if protocol == "openai":
        client = openai_client(handle)
        kwargs = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message.content or ""
        chunks = client.chat.completions.create(**kwargs, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    client = anthropic_client(handle)
    greedy = {"temperature": 0}  # this SDK has no sampling arguments
    kwargs = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "extra_body": greedy}
    if not stream:
        return "".join(b.text for b in client.messages.create(**kwargs).content if b.type == "text")
    with client.messages.stream(**kwargs) as events:
        return "".join(events.text_stream)


def speculative_status(handle) -> dict:
    r = httpx.get(handle.base_url + "/v1/status", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["scheduler"]["speculative"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_greedy_replies_are_the_same_with_copy_drafts(workers, protocol, stream):
    copy, plain = workers
    messages = [{"role": "user", "content": f"{CODE}\n{ASK} ({protocol}, {stream})"}]
    before = speculative_status(copy)
    assert reply(copy, protocol, stream, messages) == reply(plain, protocol, stream, messages)
    after = speculative_status(copy)
    assert after["mode"] == "copy" and speculative_status(plain)["mode"] == "off"
    assert after["verify_steps"] > before["verify_steps"]  # it drafted
    assert after["recent"][-1]["source"] == "copy"
    status = httpx.get(copy.base_url + "/v1/status", headers=AUTH).json()
    assert status["recent"][0]["drafts"]["draft"] == "copy"  # the access log's figures too


def test_a_hybrids_next_turn_from_its_cache_after_drafting_equals_a_cold_prefill(workers):
    copy, plain = workers
    first = [{"role": "user", "content": f"{CODE}\nNext turn test. {ASK}"}]
    answer = reply(copy, "anthropic", False, first)
    second = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Again, shorter."},
    ]
    # The drafting worker continues from its cache; the plain one prefills it all.
    client = anthropic_client(copy)
    warm = client.messages.create(model=MODEL, messages=second, max_tokens=32, extra_body=GREEDY)
    assert warm.usage.cache_read_input_tokens > 0
    clear(plain)
    cold = anthropic_client(plain).messages.create(
        model=MODEL, messages=second, max_tokens=32, extra_body=GREEDY
    )
    assert cold.usage.cache_read_input_tokens == 0
    assert [b.text for b in warm.content] == [b.text for b in cold.content]


def test_a_forced_tool_call_under_drafting_is_schema_valid(workers):
    # The grammar masks each verify's positions at once and rolls back past rejected drafts:
    # the call is the one plain decoding writes.
    copy, plain = workers
    before = speculative_status(copy)["verify_steps"]
    for i in range(3):
        calls = []
        for handle in (copy, plain):
            out = openai_client(handle).chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"{CODE}\nWeather in f{i}?"}],
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                max_tokens=64,
                temperature=0,
            )
            (call,) = out.choices[0].message.tool_calls
            calls.append((call.function.name, call.function.arguments))
        name, arguments = calls[0]
        assert name == "get_weather"
        parsed = json.loads(arguments)
        assert set(parsed) == {"city"} and isinstance(parsed["city"], str)
        assert calls[0] == calls[1]
    assert speculative_status(copy)["verify_steps"] > before  # it drafted inside the calls


def test_a_stop_string_inside_a_verify_ends_the_reply_where_plain_decoding_does(workers):
    # The scheduler finds a stop string among a verify's tokens while the next verify is
    # queued: it is dropped, and the next turn from the cache is plain decoding's.
    copy, plain = workers
    messages = [{"role": "user", "content": f"{CODE}\nStop test. {ASK}"}]
    full = reply(plain, "openai", False, messages, max_tokens=64)
    stop = full[2 * len(full) // 3 :][:3]
    answers = []
    for handle in (copy, plain):
        out = openai_client(handle).chat.completions.create(
            model=MODEL, messages=messages, max_tokens=64, temperature=0, stop=[stop]
        )
        answers.append((out.choices[0].message.content, out.choices[0].finish_reason))
        turn = [*messages, {"role": "assistant", "content": answers[-1][0]}]
        answers.append(reply(handle, "openai", False, [*turn, {"role": "user", "content": "?"}]))
    assert answers[0] == answers[2] and answers[0][1] == "stop"
    assert answers[1] == answers[3]


def test_a_reply_cancelled_mid_stream_leaves_the_next_ones_as_plain_decoding_writes(workers):
    copy, plain = workers
    messages = [{"role": "user", "content": f"{CODE}\nCancel test. {ASK}"}]
    chunks = openai_client(copy).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=400, temperature=0, stream=True
    )
    for i, _ in enumerate(chunks):
        if i == 12:
            break
    chunks.close()  # the worker cancels it between two verifies, one of them queued
    assert reply(copy, "openai", True, messages) == reply(plain, "openai", True, messages)


def test_a_second_request_arriving_while_one_drafts_gets_plain_decodings_replies(workers):
    # The first drafts alone with a verify queued; the second's prefill makes it decode plainly
    # and then move into the batch, mid-reply.
    from concurrent.futures import ThreadPoolExecutor

    copy, plain = workers
    asks = [
        [{"role": "user", "content": f"{CODE}\nFirst of two. {ASK}"}],
        [{"role": "user", "content": f"Second of two. {ASK}\n{CODE}"}],
    ]
    alone = [reply(plain, "openai", False, m, max_tokens=96) for m in asks]
    before = speculative_status(copy)["verify_steps"]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(reply, copy, "openai", True, asks[0], 96)
        while speculative_status(copy)["verify_steps"] == before and not first.done():
            time.sleep(0.005)  # until the first one drafts
        second = pool.submit(reply, copy, "openai", False, asks[1], 96)
        together = [first.result(), second.result()]
    assert together == alone


def test_metrics_show_the_drafting_figures(workers):
    copy, _ = workers
    text = httpx.get(copy.base_url + "/metrics", headers=AUTH).text
    for name in ("drafted_tokens_total", "accepted_drafts_total", "tokens_per_verify"):
        assert f"mlxctl_speculative_{name}" in text


@pytest.mark.parametrize(
    "family, mode, says",
    [
        ("qwen2", "nope", "unknown --speculative 'nope'; choose one of: auto, off, copy, mtp"),
        ("qwen2", "mtp", "--speculative mtp: MTP heads are built for qwen3_next, qwen3_5"),
        ("qwen3_next", "mtp", "--speculative mtp: the checkpoint has no mtp.* weights"),
    ],
)
def test_a_draft_source_the_model_cannot_use_is_a_clear_usage_error(family, mode, says):
    model = tiny_model(family=family)
    run = subprocess.run(
        [sys.executable, "-m", "server", "--model", str(model), "--speculative", mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert says in run.stderr + run.stdout


def test_config_speculative_reaches_the_worker_command_line():
    from mlxctl.config import SCHEMA, worker_options
    from server.edge.contract import option_names, worker_argv

    values = {key.path: key.default for key in SCHEMA}
    argv = worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    assert argv[argv.index("--speculative") + 1] == "auto"
    values["speculative"] = "off"
    argv = worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    assert argv[argv.index("--speculative") + 1] == "off"
    assert "speculative" in option_names()  # new releases record that they accept it


@pytest.fixture(scope="module")
def mtp_workers():
    """(--speculative mtp, auto, off) on the tiny hybrid with a random MTP head."""
    model = tiny_model(family="qwen3_next", mtp=True)
    handles = []
    try:
        for mode in ("mtp", "auto", "off"):
            handles.append(start_worker(model, "--speculative", mode, api_key=API_KEY))
        yield handles
    finally:
        for handle in handles:
            handle.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_greedy_replies_are_the_same_with_the_mtp_head(mtp_workers, protocol, stream):
    messages = [{"role": "user", "content": f"{CODE}\n{ASK} (mtp, {protocol}, {stream})"}]
    mtp, auto, off = mtp_workers
    plain = reply(off, protocol, stream, messages)
    before = speculative_status(mtp)
    assert reply(mtp, protocol, stream, messages) == plain
    after = speculative_status(mtp)
    assert after["mode"] == "mtp" and after["mtp"]
    assert after["verify_steps"] > before["verify_steps"]
    assert after["recent"][-1]["source"] == "mtp"
    status = httpx.get(mtp.base_url + "/v1/status", headers=AUTH).json()
    assert status["recent"][0]["drafts"]["draft"] == "mtp"  # the access log's figures too
    # `auto` loads the head and drafts with it where its prior pays: not on this tiny model,
    # whose LM head (read by every guess) is most of its weights; it drafts copies instead.
    assert reply(auto, protocol, stream, messages) == plain
    assert speculative_status(auto)["mtp"] and not speculative_status(off)["mtp"]


def test_a_hybrids_next_turn_after_mtp_drafting_equals_a_cold_prefill(mtp_workers):
    mtp, plain = mtp_workers[0], mtp_workers[-1]
    first = [{"role": "user", "content": f"{CODE}\nNext turn, MTP. {ASK}"}]
    answer = reply(mtp, "openai", False, first)
    again = {"role": "user", "content": "Again."}
    second = [*first, {"role": "assistant", "content": answer}, again]
    warm = openai_client(mtp).chat.completions.create(
        model=MODEL, messages=second, max_tokens=32, temperature=0
    )
    assert warm.usage.prompt_tokens_details.cached_tokens > 0
    clear(plain)
    cold = openai_client(plain).chat.completions.create(
        model=MODEL, messages=second, max_tokens=32, temperature=0
    )
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert warm.choices[0].message.content == cold.choices[0].message.content
