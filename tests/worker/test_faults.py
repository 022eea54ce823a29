"""Faults a real worker survives or reports: a cache disk that fails (it goes on in RAM, says
so, and tries the disk again later) and a generation thread that dies (`/health` 503 at once,
so the supervisor restarts it; no request waits on a dead thread)."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import long_text, openai_client

MODEL = "claude-sonnet-4-5"
AUTH = {"authorization": f"Bearer {API_KEY}"}


def _get(handle, path: str) -> dict:
    r = httpx.get(handle.base_url + path, headers=AUTH, timeout=10)
    return r.json()


def _wait(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _disk_entries(handle) -> int:
    return sum(e["tier"] == "disk" for e in _get(handle, "/v1/cache")["entries"])


def _turn(handle, seed: int, follow_up: bool = False):
    messages = [
        {"role": "system", "content": long_text(900, seed=seed)},
        {"role": "user", "content": "Start."},
    ]
    if follow_up:
        messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": "Go."}]
    client = openai_client(handle).with_options(timeout=30)
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)


def test_a_failing_cache_disk_costs_only_its_entries_and_is_tried_again(tmp_path):
    cache_dir = tmp_path / "kv"
    handle = start_worker(
        tiny_model(),
        "--cache-dir",
        str(cache_dir),
        "--cache-write-behind",
        "0.1",
        "--cache-disk-retry",
        "2",
        api_key=API_KEY,
    )
    try:
        first = _turn(handle, seed=1)

        def prompt_on_disk() -> bool:  # the prompt's entry, not just its system checkpoint
            entries = _get(handle, "/v1/cache")["entries"]
            return any(
                e["tier"] == "disk" and e["tokens"] >= first.usage.prompt_tokens - 1
                for e in entries
            )

        _wait(prompt_on_disk, what="the first prompt's entry on disk")
        httpx.delete(handle.base_url + "/v1/cache", params={"tier": "ram"}, headers=AUTH)
        # The disk fails under the worker: its folder lock becomes a directory (as root, a mode
        # does not stop a write; a directory where a file must be does).
        (model_dir,) = [p for p in cache_dir.iterdir() if p.is_dir()]
        (model_dir / ".lock").unlink()
        (model_dir / ".lock").mkdir()

        follow_up = _turn(handle, seed=1, follow_up=True)  # its entry is on the failing disk
        assert follow_up.choices[0].finish_reason in ("stop", "length")
        assert httpx.get(handle.base_url + "/health").status_code == 200
        disk = _get(handle, "/v1/status")["cache"]["disk"]
        # The lookup's read failed (before: it raised on the generation thread, which died).
        assert disk["error"]["reason"].startswith("read: IsADirectoryError"), disk
        assert disk["error"]["since"] <= time.time()

        # RAM goes on: a new conversation is stored and served from RAM while the disk fails.
        _turn(handle, seed=2)
        again = _turn(handle, seed=2)
        assert again.usage.prompt_tokens_details.cached_tokens > 0
        assert handle.log().count("kv cache: disk tier failed") == 1  # logged once
        cleared = httpx.delete(handle.base_url + "/v1/cache", params={"tier": "disk"}, headers=AUTH)
        assert cleared.status_code == 503 and "cache disk failed" in cleared.text, cleared.text

        # Repaired: the disk is tried again after the back-off and takes the entries RAM kept.
        (model_dir / ".lock").rmdir()
        time.sleep(2.5)
        _turn(handle, seed=3)
        _wait(lambda: _disk_entries(handle) >= 2, what="entries written after the repair")
        assert _get(handle, "/v1/status")["cache"]["disk"]["error"] is None
        assert "kv cache: disk tier works again" in handle.log()
    finally:
        handle.stop()


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: room for the index, not for one KV entry (mounting needs root)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_cache_disk_is_reported_and_the_worker_serves_from_ram(full_disk):
    handle = start_worker(
        tiny_model(), "--cache-dir", str(full_disk), "--cache-write-behind", "0.1",
        api_key=API_KEY,
    )  # fmt: skip
    try:
        _turn(handle, seed=4)
        _wait(lambda: _get(handle, "/v1/status")["cache"]["disk"]["error"], what="the outage")
        disk = _get(handle, "/v1/status")["cache"]["disk"]
        assert disk["error"]["reason"].startswith("write: "), disk
        assert "MiB free)" in disk["error"]["reason"]  # the reason says how full the disk is
        again = _turn(handle, seed=4)  # RAM still has it
        assert again.usage.prompt_tokens_details.cached_tokens > 0
        assert httpx.get(handle.base_url + "/health").status_code == 200
    finally:
        assert handle.stop() == 0  # the stop's flush tries once more, fails, and exits cleanly
    assert handle.log().count("kv cache: disk tier failed") == 1


def test_a_dead_generation_thread_fails_health_and_its_requests_at_once(tiny_model_path):
    # Test hook: the generation thread dies at its first progress beat (an uncaught error).
    handle = start_worker(
        tiny_model_path, "--no-cache", api_key=API_KEY, env={"MLXCTL_TEST_DIE_AT_BEAT": "1"}
    )
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    headers = {**AUTH, "anthropic-version": "2023-06-01"}
    try:
        events: list[str] = []

        def stream() -> None:
            with httpx.stream(
                "POST", handle.base_url + "/v1/messages", json=body, headers=headers, timeout=30
            ) as r:
                events.extend(line for line in r.iter_lines() if line.startswith("event:"))

        reader = threading.Thread(target=stream)
        reader.start()
        reader.join(20)
        assert not reader.is_alive(), f"the stream still waits on a dead thread: {events}"
        assert events[-1] == "event: error", events
        health = httpx.get(handle.base_url + "/health")
        assert health.status_code == 503
        assert health.json()["status"] == "stuck"  # the supervisor restarts a stuck worker
        assert "generation thread died" in health.json()["error"]
        later = httpx.post(
            handle.base_url + "/v1/messages", json={**body, "stream": False}, headers=headers
        )
        assert later.status_code == 503, later.text
    finally:
        handle.stop()
