"""Claude Code itself sends a PDF (a `document` block) to the real worker, which reads its text
into the prompt on a text-only model, and the turn completes."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import tiny_model
from tests.e2e.test_claude_cli import claude_binary
from tests.e2e.test_claude_vision import ask, served
from tests.fixtures_worker import API_KEY, start_worker
from tests.pdf_files import text_pdf

pytestmark = pytest.mark.skipif(
    claude_binary() is None, reason="Claude Code is not installed (.ci/run installs it with npm)"
)
PAGE = "The front door keeps the address 127.0.0.1:18555 through every switch. " * 6


def test_claude_code_sends_a_pdf_whose_text_reaches_the_model(tmp_path):
    worker = start_worker(
        tiny_model(), "--max-output-tokens", "16", "--cache-dir", str(tmp_path / "kv"),
        api_key=API_KEY,
    )  # fmt: skip
    try:
        question = {"type": "text", "text": "What does this spec say about the address?"}
        ask(worker, tmp_path, [question])  # the same turn without the PDF: the baseline
        before = len(served(worker))
        data = base64.b64encode(text_pdf([PAGE, PAGE])).decode()
        source = {"type": "base64", "media_type": "application/pdf", "data": data}
        result = ask(worker, tmp_path, [question, {"type": "document", "source": source}])
        turns = served(worker)
        log = worker.log()
    finally:
        worker.stop()
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("type") == "assistant"], result.stdout + result.stderr
    without, with_pdf = turns[0], turns[before]
    # Two pages of text, each well over a hundred tokens, are in the prompt the model read.
    assert with_pdf["prompt_tokens"] - without["prompt_tokens"] >= 200
    assert "document dropped" not in log
