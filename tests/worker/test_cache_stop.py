"""The stop keeps the newest conversation state: a real worker, several turns, SIGTERM right after
the last while the write-behind is busy with an older entry, a restart, and the next turn."""

from __future__ import annotations

from tests.conftest import tiny_model
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_cache import long_text, openai_client, wait_for_log

MODEL = "claude-sonnet-4-5"


def _ask(handle, messages: list[dict]):
    client = openai_client(handle).with_options(timeout=60)
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)


def test_a_stop_writes_the_newest_entry_first_while_the_writer_is_busy(tmp_path):
    cache_dir = str(tmp_path / "kv")
    handle = start_worker(
        tiny_model(),
        "--cache-dir",
        cache_dir,
        "--cache-write-behind",
        "0.1",
        "--stop-grace",
        "6",
        api_key=API_KEY,
        # Test hook: a slow disk. The write-behind takes the first turn's entry and is still
        # on it when the stop comes.
        env={"MLXCTL_TEST_SLOW_WRITE_BEHIND_S": "60"},
    )
    messages = [
        {"role": "system", "content": long_text(600, seed=11)},
        {"role": "user", "content": "Start."},
    ]
    try:
        _ask(handle, messages)
        wait_for_log(handle, "the write-behind dwells")
        for turn in ("Go on.", "And then?"):
            messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": turn}]
            last = _ask(handle, messages)
    finally:
        assert handle.stop() == 0  # SIGTERM right after the last turn
    assert "still on an older entry at stop" in handle.log()  # the slow write went on meanwhile

    handle = start_worker(tiny_model(), "--cache-dir", cache_dir, api_key=API_KEY)
    try:
        messages += [{"role": "assistant", "content": "Ok."}, {"role": "user", "content": "Next."}]
        resumed = _ask(handle, messages)
        # From the newest turn's prompt, not from a turn or two back.
        assert resumed.usage.prompt_tokens_details.cached_tokens >= last.usage.prompt_tokens - 1
    finally:
        handle.stop()
