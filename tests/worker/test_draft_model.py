"""A draft model in a real worker: greedy replies over both APIs, streamed and not, equal those
of a worker that does not draft, copies stacked on its guesses and a conversation's next turn
feeding the draft only its new tokens; /v1/status names the source, the draft model and its kept
caches; a draft with another tokenizer, or `--speculative draft` without one, is a usage error at
startup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, REPO_ROOT, start_worker
from tests.worker.test_speculative import ASK, CODE, reply, speculative_status


@pytest.fixture(scope="module")
def workers():
    """(a worker drafting with a 1-layer draft of other weights, a plain worker, the draft)."""
    model, draft = tiny_model(), tiny_model(seed=1, layers=1)
    drafting = start_worker(
        model, "--speculative", "draft", "--draft-model", str(draft), api_key=API_KEY
    )
    try:
        plain = start_worker(model, "--speculative", "off", api_key=API_KEY)
    except Exception:
        drafting.stop()
        raise
    yield drafting, plain, draft
    drafting.stop()
    plain.stop()


def test_auto_drafts_copies_where_the_draft_model_cannot_pay(workers):
    # The tiny draft reads nearly as many weight bytes as the model: auto drafts copies.
    _, plain, draft = workers
    auto = start_worker(tiny_model(), "--draft-model", str(draft), api_key=API_KEY)
    try:
        messages = [{"role": "user", "content": f"{CODE}\n{ASK} (auto)"}]
        assert reply(auto, "openai", True, messages) == reply(plain, "openai", True, messages)
        status = speculative_status(auto)
        assert status["mode"] == "auto" and status["draft_model"] == str(draft)
        assert status["recent"][-1]["source"] == "copy"
    finally:
        auto.stop()


@pytest.mark.parametrize(("protocol", "stream"), [("openai", False), ("anthropic", True)])
def test_greedy_replies_are_the_same_with_a_draft_model(workers, protocol, stream):
    drafting, plain, draft = workers
    messages = [{"role": "user", "content": f"{CODE}\n{ASK} (draft, {protocol})"}]
    before = speculative_status(drafting)
    assert reply(drafting, protocol, stream, messages) == reply(plain, protocol, stream, messages)
    after = speculative_status(drafting)
    assert after["mode"] == "draft" and after["draft_model"] == str(draft)
    assert after["verify_steps"] > before["verify_steps"]  # it drafted
    assert after["recent"][-1]["source"] == "draft"


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_the_next_turn_feeds_the_draft_only_its_new_tokens(workers, protocol):
    drafting, plain, _ = workers
    first = [{"role": "user", "content": f"{CODE}\n{ASK} (turn 1, {protocol})"}]
    answer = reply(drafting, protocol, False, first)
    assert answer == reply(plain, protocol, False, first)
    one = speculative_status(drafting)["recent"][-1]
    kept = speculative_status(drafting)["draft_caches"]
    second = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "f10?"}]
    assert reply(drafting, protocol, True, second) == reply(plain, protocol, True, second)
    status = speculative_status(drafting)
    two = status["recent"][-1]
    # Turn 1's whole prompt came from its draft cache; only the reply and the new message ran.
    assert two["draft_reused"] >= one["draft_reused"] + one["draft_prefilled"]
    assert 0 < two["draft_prefilled"] < one["draft_reused"] + one["draft_prefilled"]
    assert status["draft_caches"]["hits"] > kept["hits"]
    assert 0 < status["draft_caches"]["entries"] <= status["draft_caches"]["max_entries"] == 4


def start_failing(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "--model", str(tiny_model()), *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_draft_model_with_another_tokenizer_is_a_usage_error():
    run = start_failing("--draft-model", str(tiny_model(vocab_size=4096)))
    assert run.returncode == 2
    assert "does not share the model's tokenizer: vocabulary of" in run.stderr + run.stdout


def test_draft_mode_without_a_draft_model_is_a_usage_error():
    run = start_failing("--speculative", "draft")
    assert run.returncode == 2
    assert "--speculative draft needs --draft-model" in run.stderr + run.stdout


def test_config_draft_model_reaches_the_worker_command_line():
    from mlxctl.config import SCHEMA, worker_options
    from server.edge.contract import option_names, worker_argv

    values = {key.path: key.default for key in SCHEMA}
    assert "--draft-model" not in worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    values["draft_model"] = "/models/small"
    values["draft_cache.entries"] = 0  # the user's value wins: no draft caches kept
    argv = worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    assert argv[argv.index("--draft-model") + 1] == "/models/small"
    assert argv[argv.index("--draft-cache-entries") + 1] == "0"
    assert argv[argv.index("--draft-cache-bytes") + 1] == str(4 << 30)
    assert {"draft_model", "draft_cache_entries"} <= set(option_names())  # releases record them
