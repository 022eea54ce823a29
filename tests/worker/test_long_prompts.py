"""A prompt far over the context is refused before it is tokenized in full, in the protocol's own
400 naming both numbers, and the worker gives back the memory it took."""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest

from tests.fixtures_worker import API_KEY, start_worker

HEADERS = {"x-api-key": API_KEY, "content-type": "application/json"}
WORDS = "cache prefix token model worker stream prompt reply "
MB = 1_000_000


@pytest.fixture(scope="module")
def roomy_worker(tiny_model_path):
    # The default body limit (32 MB): a 23 MB prompt gets through to the prompt path.
    handle = start_worker(tiny_model_path, "--no-cache", api_key=API_KEY)
    yield handle
    handle.stop()


class PeakRss:
    """The worker's RSS, polled while a request runs."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.process.memory_info().rss


def _refused(handle, path: str, body: dict) -> tuple[httpx.Response, float, PeakRss, int]:
    raw = json.dumps(body).encode()
    assert len(raw) < 32 * MB  # under the body limit: not a 413
    rss = PeakRss(handle.process.pid)
    started = time.monotonic()
    r = httpx.post(handle.base_url + path, content=raw, headers=HEADERS, timeout=300)
    seconds = time.monotonic() - started
    time.sleep(0.5)
    return r, seconds, rss, rss.stop()


@pytest.mark.parametrize("chars", [20 * MB, 2 * MB], ids=["23MB-over-the-char-bound", "2MB"])
def test_a_prompt_far_over_the_context_is_refused_at_once_and_its_memory_given_back(
    roomy_worker, chars
):
    text = WORDS * (chars // len(WORDS))
    body = {"model": "claude-x", "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    r, seconds, rss, after = _refused(roomy_worker, "/v1/messages", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "at least" in error["message"] and "32768" in error["message"], error
    # Coarse: tokenizing the 23 MB prompt in full took 139 s and 3.4 GB here before.
    assert seconds < 15, seconds
    # The prompt's own copies (body, JSON, template text) come and go; what stays is little.
    print(f"{chars} chars: {seconds:.2f}s, rss {rss.before} -> peak {rss.peak} -> {after}")
    assert rss.peak - rss.before < 20 * chars + 256 * MB, (rss.before, rss.peak)
    assert after - rss.before < 2 * chars + 64 * MB, (rss.before, after)


def test_openai_gets_its_own_400_for_a_prompt_far_over_the_context(roomy_worker):
    text = WORDS * (2 * MB // len(WORDS))
    body = {"model": "claude-x", "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    r, _, _, _ = _refused(roomy_worker, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "at least" in error["message"]


def test_a_prompt_that_fits_is_still_served_whole(roomy_worker):
    text = WORDS * 200  # ~1,600 tokens: the probe must not refuse what fits
    body = {"model": "claude-x", "max_tokens": 2, "messages": [{"role": "user", "content": text}]}
    r = httpx.post(roomy_worker.base_url + "/v1/messages", json=body, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens"] > 1000
