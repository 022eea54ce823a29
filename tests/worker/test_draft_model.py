"""A draft model in a real worker: greedy replies over the OpenAI API, streamed and not, equal
those of a worker that does not draft; /v1/status names the source and the draft model; a draft
with another tokenizer, or `--speculative draft` without one, is a usage error at startup."""

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


@pytest.mark.parametrize("stream", [False, True])
def test_greedy_replies_are_the_same_with_a_draft_model(workers, stream):
    drafting, plain, draft = workers
    messages = [{"role": "user", "content": f"{CODE}\n{ASK} (draft, {stream})"}]
    before = speculative_status(drafting)
    assert reply(drafting, "openai", stream, messages) == reply(plain, "openai", stream, messages)
    after = speculative_status(drafting)
    assert after["mode"] == "draft" and after["draft_model"] == str(draft)
    assert after["verify_steps"] > before["verify_steps"]  # it drafted
    assert after["recent"][-1]["source"] == "draft"


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
    argv = worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    assert argv[argv.index("--draft-model") + 1] == "/models/small"
    assert "draft_model" in option_names()  # new releases record that they accept it
