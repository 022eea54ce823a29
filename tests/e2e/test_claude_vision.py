"""Claude Code itself sends a pasted screenshot to a vision model on the real worker, with the
environment `mlxctl claude` derives (nothing in it hides images), and completes the turn."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess

import httpx
import pytest

from mlxctl import claude_env
from tests.conftest import tiny_vlm
from tests.e2e.test_claude_cli import claude_binary
from tests.fixtures_worker import API_KEY, start_worker

pytestmark = pytest.mark.skipif(
    claude_binary() is None, reason="Claude Code is not installed (.ci/run installs it with npm)"
)


def screenshot() -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (640, 400), (30, 120, 200)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def ask(worker, home, content: list[dict]) -> subprocess.CompletedProcess:
    report = httpx.get(worker.base_url + "/v1/status", headers=worker_auth()).json()
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    for s in claude_env.settings_for(report, worker.base_url, API_KEY):
        env[s.name] = s.value
    env["HOME"] = str(home)
    message = {"type": "user", "message": {"role": "user", "content": content}}
    argv = [str(claude_binary()), "-p", "--input-format", "stream-json"]
    argv += ["--output-format", "stream-json", "--verbose", "--max-turns", "1"]
    return subprocess.run(
        argv, input=json.dumps(message) + "\n", capture_output=True, text=True, env=env, timeout=900
    )


def worker_auth() -> dict:
    return {"authorization": f"Bearer {API_KEY}"}


def served(worker) -> list[dict]:
    """The worker's finished Messages requests, oldest first."""
    report = httpx.get(worker.base_url + "/v1/status", headers=worker_auth()).json()
    return [r for r in reversed(report["recent"]) if r["protocol"] == "anthropic"]


def test_claude_code_sends_a_pasted_screenshot_and_completes_the_turn(tmp_path):
    worker = start_worker(
        tiny_vlm(), "--max-output-tokens", "16", "--cache-dir", str(tmp_path / "kv"),
        api_key=API_KEY,
    )  # fmt: skip
    try:
        question = {"type": "text", "text": "What is wrong on this screen?"}
        ask(worker, tmp_path, [question])  # the same turn without the image: the baseline
        before = len(served(worker))
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": screenshot()},
        }
        result = ask(worker, tmp_path, [question, image])
        turns = served(worker)
    finally:
        worker.stop()
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    replies = [e for e in events if e.get("type") == "assistant"]
    assert replies, result.stdout + result.stderr  # the turn reached the model and came back
    without, with_image = turns[0], turns[before]
    # The screenshot's 256 image tokens (and its markers) are in the prompt the model read; the
    # system prompt came from the cache the text-only session left (a new session's prompt
    # differs from it further on, image or not).
    assert with_image["prompt_tokens"] - without["prompt_tokens"] >= 256
    assert with_image["cached_tokens"] > 0.5 * without["prompt_tokens"]
