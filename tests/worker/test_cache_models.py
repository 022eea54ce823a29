"""The prefix cache on the models people run: hybrid (qwen3_next: ArraysCache + KVCache) and
sliding-window (gemma3_text: RotatingKVCache far shorter than the prompt) caches, which cannot be
trimmed back, so only exact checkpoints (end of prompt, end of system+tools) can be reused.

Real workers on tiny random models, the official SDKs, in RAM and after a restart from disk.
"""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import pytest

from server.prefix_cache import disk_index
from server.testing.scripts import WEATHER_TOOL
from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import AUTH, MODEL, anthropic_client, long_text, openai_client

FAMILIES = ["qwen3_next", "gemma3_text"]
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


class Session:
    """One conversation over one protocol; `ask` returns (cached, prompt) tokens of a turn."""

    def __init__(self, protocol: str, system: str):
        self.protocol, self.system, self.messages = protocol, system, []

    def ask(self, handle, text: str) -> tuple[int, int]:
        self.messages.append({"role": "user", "content": text})
        if self.protocol == "openai":
            reply = openai_client(handle).chat.completions.create(
                model=MODEL,
                messages=[{"role": "system", "content": self.system}, *self.messages],
                tools=[WEATHER_TOOL],
                max_tokens=6,
            )
            content = reply.choices[0].message.content or "Done."
            cached = reply.usage.prompt_tokens_details.cached_tokens
            prompt = reply.usage.prompt_tokens
        else:
            reply = anthropic_client(handle).messages.create(
                model=MODEL,
                system=self.system,
                messages=self.messages,
                tools=[ANTHROPIC_TOOL],
                max_tokens=6,
            )
            content = "".join(b.text for b in reply.content if b.type == "text") or "Done."
            u = reply.usage
            cached = u.cache_read_input_tokens
            prompt = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
        self.messages.append({"role": "assistant", "content": content})
        return cached, prompt


def cache_stats(handle) -> dict:
    r = httpx.get(handle.base_url + "/v1/status", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["cache"]


def ram_entries(handle) -> list[dict]:
    r = httpx.get(handle.base_url + "/v1/cache", headers=AUTH)
    return [e for e in r.json()["entries"] if e["tier"] == "ram"]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("family", FAMILIES)
def test_five_turn_session_reuses_90_percent_in_ram_and_after_a_restart(family, protocol, tmp_path):
    model = tiny_model(family=family)
    cache_dir = str(tmp_path / "kv")
    system = long_text(500, seed=21)
    session = Session(protocol, system)
    handle = start_worker(
        model, "--cache-dir", cache_dir, "--max-output-tokens", "8", api_key=API_KEY
    )
    try:
        cached, prompt = session.ask(handle, "List the files.")
        assert cached == 0
        for turn in range(1, 5):
            cached, prompt = session.ask(handle, f"Now read file {turn}.")
            assert cached >= 0.9 * prompt, (turn, cached, prompt)
        # One conversation is one entry (plus the system+tools checkpoint).
        entries = ram_entries(handle)
        assert len(entries) == 2, entries
    finally:
        assert handle.stop() == 0

    handle = start_worker(
        model, "--cache-dir", cache_dir, "--max-output-tokens", "8", api_key=API_KEY
    )
    try:
        cached, prompt = session.ask(handle, "And the last one.")
        assert cached >= 0.9 * prompt, (cached, prompt)
        # A new session on the same system prompt and tools starts from its checkpoint.
        other = Session(protocol, system)
        cached, prompt = other.ask(handle, "Something else entirely: say hi.")
        assert cached >= 0.8 * prompt, (cached, prompt)
    finally:
        handle.stop()


@pytest.mark.parametrize("family", ["qwen2", *FAMILIES])
def test_ten_turn_session_holds_about_one_entry(family, tmp_path):
    model = tiny_model() if family == "qwen2" else tiny_model(family=family)
    handle = start_worker(
        model, "--cache-disk-bytes", "0", "--max-output-tokens", "8", api_key=API_KEY
    )
    try:
        session = Session("openai", long_text(400, seed=22))
        for turn in range(10):
            session.ask(handle, f"Step {turn}: go on.")
        entries = sorted(ram_entries(handle), key=lambda e: e["tokens"])
        # The conversation, plus the system+tools checkpoint where the cache cannot be trimmed.
        assert len(entries) == (1 if family == "qwen2" else 2), entries
        system = entries[0]["bytes"] if len(entries) == 2 else 0
        held = cache_stats(handle)["ram"]["bytes"]
        assert held <= 1.3 * entries[-1]["bytes"] + system, entries
    finally:
        handle.stop()


def wait_clean(handle, timeout: float = 30.0) -> dict:
    """The cache stats once the write-behind has put every entry on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = cache_stats(handle)
        if stats["dirty_entries"] == 0:
            return stats
        time.sleep(0.1)
    raise AssertionError(f"still dirty after {timeout}s: {cache_stats(handle)}")


def test_kill_9_after_a_few_turns_loses_nothing_written_behind(tmp_path):
    model = tiny_model(family="qwen3_next")
    cache_dir = tmp_path / "kv"
    args = ("--cache-dir", str(cache_dir), "--cache-write-behind", "0.2")
    handle = start_worker(model, *args, api_key=API_KEY)
    session = Session("anthropic", long_text(500, seed=23))
    try:
        for turn in range(3):
            session.ask(handle, f"Turn {turn}.")
        stats = wait_clean(handle)
        assert stats["bytes_written_behind"] > 0
        assert stats["restore"]["mode"] == "lazy"
    finally:
        handle.process.send_signal(signal.SIGKILL)
        handle.process.wait(10)
    # A write killed half way leaves a temp file named after its (now dead) process.
    (folder,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / f".tmp-0123456789abcdef01234567-{dead.pid}.safetensors").write_bytes(b"\0" * 100)

    handle = start_worker(model, *args, api_key=API_KEY)
    try:
        cached, prompt = session.ask(handle, "After the crash.")
        assert cached >= 0.9 * prompt, (cached, prompt)
        assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] == []
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in folder.glob("*.safetensors"))
    finally:
        handle.stop()


def test_a_stop_with_many_dirty_entries_writes_them_within_its_grace(tmp_path):
    cache_dir = tmp_path / "kv"
    handle = start_worker(
        tiny_model(family="gemma3_text"),
        *("--cache-dir", str(cache_dir), "--cache-write-behind", "-1", "--stop-grace", "8"),
        api_key=API_KEY,
    )
    try:
        for seed in range(4):  # four conversations, nothing on disk yet
            Session("openai", long_text(300, seed=40 + seed)).ask(handle, "Hi.")
        assert cache_stats(handle)["dirty_entries"] >= 4
    finally:
        code = handle.stop(timeout=8)  # SIGKILL after the grace: -9
    assert code == 0
    assert len(disk_index.list_entries(cache_dir)) >= 4
    assert "0 still dirty" in handle.log()
