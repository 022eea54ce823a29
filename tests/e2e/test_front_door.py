"""The front door end to end: a real supervisor and real workers on the tiny model, real HTTP
through the service's address while it switches workers, crashes and cancels."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import openai
import pytest

from mlxctl.supervisor.worker_output import SPAWN_MARK
from mlxctl.system.processes import free_port
from tests.fixtures_supervisor import _make

pytestmark = pytest.mark.slow
LONG_STREAM = 12000  # greedy on random weights: seconds of decode, ended only by max_tokens


@pytest.fixture(scope="module")
def door(tmp_path_factory, tiny_model_path):
    """A service on a port given to `start` (not the config's), two releases to switch between,
    a stop grace long enough for a stream to finish on the replaced worker, and room for the
    crashes of the resume tests."""
    ctl = _make(tmp_path_factory.mktemp("door"), "", str(tiny_model_path))
    ctl.env.pop("MLXCTL_WORKER_COMMAND")  # releases decide what runs
    config = ctl.home / "config.toml"
    # A busy machine decodes the long stream slowly: the grace must outlast it, not cut it.
    said = config.read_text().replace("stop_timeout = 3.0", "stop_timeout = 300.0")
    # A kill -9 per resume test, each soon after the last restart: never FATAL here.
    config.write_text(said.replace("max_fast_failures = 3", "max_fast_failures = 20"))
    ctl.run("release", "archive", "--note", "first", check=True)
    ctl.run("release", "archive", "--note", "second", check=True)
    ctl.given = free_port()
    ctl.run("start", "--port", str(ctl.given), check=True)
    ctl.url = f"http://127.0.0.1:{ctl.given}"
    yield ctl
    ctl.run("stop", "--timeout", "2", timeout=120)


def client(ctl) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ctl.url}/v1", api_key="none", max_retries=0, timeout=300)


def serving(ctl) -> dict:
    status, code = ctl.status()
    assert code == 0, status
    assert status["port"] == ctl.given and status["url"] == ctl.url  # the address never moves
    assert status["worker_port"] not in (None, ctl.given)
    return status


class Load:
    """Short chat requests one after another through the front door until stopped."""

    def __init__(self, ctl):
        self.openai = client(ctl)
        self.model = ctl.model
        self.answered, self.failed = 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.openai.chat.completions.create(
                    model=self.model, max_tokens=4, messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.choices[0].message is not None
                self.answered += 1
            except Exception as exc:
                self.failed.append(repr(exc))

    def end(self) -> None:
        self.stop.set()
        self.thread.join(300)


def test_a_stream_runs_across_a_migrate_and_no_request_fails(door):
    ids = door.run("release", "ls", "--json", check=True).stdout
    second = next(r["id"] for r in json.loads(ids) if r["note"] == "second")
    before = serving(door)
    spawns = door.worker_log().count(SPAWN_MARK)
    load = Load(door)
    migrate = door.popen("migrate", "--to", second, stdout=-1, stderr=-1, text=True)
    door.wait_for(lambda: "starting the next worker" in door.supervisor_log(), timeout=300,
                  what="the handover to begin")  # fmt: skip
    seen: dict = {}

    def stream() -> None:
        chunks = client(door).chat.completions.create(
            model=door.model,
            max_tokens=LONG_STREAM,
            temperature=0.0,
            stream=True,
            messages=[{"role": "user", "content": "Tell me a long story."}],
        )
        for chunk in chunks:
            if "took over" in door.supervisor_log():
                seen["crossed"] = True  # still streaming after the new worker took over
            if chunk.choices and chunk.choices[0].finish_reason:
                seen["finish"] = chunk.choices[0].finish_reason

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    out, err = migrate.communicate(timeout=600)
    assert migrate.returncode == 0, out + err
    streamer.join(300)
    load.end()
    assert seen == {"crossed": True, "finish": "length"}
    assert load.failed == [] and load.answered > 0
    after = serving(door)
    assert after["worker_pid"] != before["worker_pid"] and after["release"] == second
    assert door.worker_log().count(SPAWN_MARK) == spawns + 1, "the target's model loads once"
    door.wait_for(lambda: "the replaced worker" in door.supervisor_log(), timeout=120,
                  what="the old worker to stop once its stream ended")  # fmt: skip


def test_rollback_restart_and_a_supervisor_restart_keep_the_address(door):
    for args in (("rollback",), ("restart",)):
        load = Load(door)
        before = serving(door)["worker_pid"]
        result = door.run(*args, timeout=600)
        load.end()
        assert result.returncode == 0, result.stdout + result.stderr
        assert load.failed == [], args
        assert serving(door)["worker_pid"] != before, args
    door.run("stop", check=True)
    door.run("start", check=True)  # no --port: the service's address is the recorded one
    serving(door)


def test_a_client_that_disconnects_cancels_the_workers_generation(door):
    cancelled = serving(door)["requests"]["cancelled"]
    body = {
        "model": door.model,
        "max_tokens": 20000,
        "temperature": 0.0,
        "stream": True,
        "messages": [{"role": "user", "content": "Go on forever."}],
    }
    with httpx.stream("POST", f"{door.url}/v1/chat/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        for count, _ in enumerate(reply.iter_lines()):
            if count > 20:
                break  # leaving the block closes the connection mid-stream
    door.wait_for(lambda: serving(door)["requests"]["cancelled"] > cancelled, timeout=60,
                  what="the worker to count the cancel")  # fmt: skip


def test_a_crash_holds_requests_and_they_succeed(door):
    before = serving(door)
    os.kill(before["worker_pid"], signal.SIGKILL)
    results: list = []

    def ask(stream: bool) -> None:
        try:
            if stream:
                chunks = client(door).chat.completions.create(
                    model=door.model, max_tokens=8, stream=True,
                    messages=[{"role": "user", "content": "hello"}],
                )  # fmt: skip
                results.append(sum(1 for _ in chunks) > 0)
            else:
                reply = client(door).chat.completions.create(
                    model=door.model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
                results.append(reply.choices[0].message is not None)
        except Exception as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=ask, args=(i % 2 == 0,)) for i in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(300)
    assert results == [True] * 6
    after = serving(door)
    assert after["restarts"] > before["restarts"] and after["worker_pid"] != before["worker_pid"]


# A stream the worker is killed in: long enough that the kill lands mid-answer (greedy, ended by
# max_tokens), cut after this many events.
RESUMED_TOKENS, CUT_AFTER = 1500, 40
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def killed_after(ctl, events, cut_after: int = CUT_AFTER) -> list:
    """Every event of `events`, the serving worker SIGKILLed once `cut_after` came."""
    pid, seen = serving(ctl)["worker_pid"], []
    for event in events:
        seen.append(event)
        if len(seen) == cut_after:
            os.kill(pid, signal.SIGKILL)
    return seen


def restarted_from(ctl, pid: int) -> None:
    ctl.wait_for(lambda: ctl.status()[0].get("worker_pid") not in (None, pid), timeout=120,
                 what="the restarted worker")  # fmt: skip


def anthropic_client(ctl):
    from anthropic import Anthropic

    return Anthropic(base_url=ctl.url, api_key="none", max_retries=0, timeout=300)


def test_an_anthropic_stream_the_worker_dies_in_ends_as_the_whole_one(door):
    kwargs = dict(
        model=door.model,
        max_tokens=RESUMED_TOKENS,
        extra_body={"temperature": 0},  # this SDK has no sampling arguments; the API takes it
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},  # its input is cut mid-arguments
    )
    with anthropic_client(door) as client:
        whole = client.messages.create(**kwargs)
        pid = serving(door)["worker_pid"]
        with client.messages.stream(**kwargs) as stream:
            killed_after(door, stream)
            resumed = stream.get_final_message()
    restarted_from(door, pid)
    assert [b.model_dump() for b in resumed.content] != []
    assert resumed.content[0].input == whole.content[0].input  # type: ignore[union-attr]
    assert (resumed.stop_reason, resumed.usage.output_tokens) == (
        whole.stop_reason,
        whole.usage.output_tokens,
    )


def test_an_openai_stream_the_worker_dies_in_ends_as_the_whole_one(door):
    kwargs = dict(
        model=door.model,
        max_tokens=RESUMED_TOKENS,
        temperature=0.0,
        messages=[{"role": "user", "content": "Tell me a long story."}],
    )
    whole = client(door).chat.completions.create(**kwargs)
    pid = serving(door)["worker_pid"]
    answered: list = []  # a request answered whole, in flight at the crash: sent again whole

    def ask_whole() -> None:
        reply = client(door).chat.completions.create(
            **{**kwargs, "messages": [{"role": "user", "content": "Another story."}]}
        )
        answered.append(reply.choices[0].finish_reason)

    asker = threading.Thread(target=ask_whole, daemon=True)
    asker.start()
    chunks = client(door).chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    seen = killed_after(door, chunks)
    asker.join(300)
    restarted_from(door, pid)
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert text == whole.choices[0].message.content
    assert {c.id for c in seen} == {seen[0].id}  # one consistent stream
    assert seen[-1].usage is not None
    assert seen[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert answered == ["length"]


RESPONSES_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": WEATHER["input_schema"],
}


def consistent_ids(seen: list) -> dict:
    """Check one response id, rising sequence numbers and each item's one id across `seen`
    (the Responses events of one stream); the final response object."""
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    final = seen[-1].response
    responses = [e.response for e in seen if hasattr(e, "response")]
    assert {r.id for r in responses} == {final.id}
    assert len({r.created_at for r in responses}) == 1
    items: dict = {}
    for event in seen:
        if event.type == "response.output_item.added":
            assert event.output_index not in items  # announced once
            items[event.output_index] = event.item.id
        elif hasattr(event, "item_id"):
            assert items[event.output_index] == event.item_id, event
    assert [item.id for item in final.output] == [items[i] for i in sorted(items)]
    return final


@pytest.mark.parametrize("forced_call", [False, True], ids=["text", "call"])
def test_a_responses_stream_the_worker_dies_in_ends_as_the_whole_one(door, forced_call):
    kwargs: dict = dict(model=door.model, max_output_tokens=RESUMED_TOKENS, temperature=0.0)
    if forced_call:  # the kill lands in its arguments
        kwargs.update(input="What is the weather in Paris?", tools=[RESPONSES_WEATHER],
                      tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    else:
        kwargs.update(input="Tell me a long story.")
    openai_client = client(door)
    whole = openai_client.responses.create(**kwargs)
    pid = serving(door)["worker_pid"]
    seen = killed_after(door, openai_client.responses.create(**kwargs, stream=True))
    restarted_from(door, pid)
    final = consistent_ids(seen)
    assert (final.status, final.usage.output_tokens) == (whole.status, whole.usage.output_tokens)  # type: ignore[union-attr]
    if forced_call:
        arguments = "".join(
            e.delta for e in seen if e.type == "response.function_call_arguments.delta"
        )
        assert arguments == final.output[0].arguments == whole.output[0].arguments  # type: ignore[union-attr]
    else:
        text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
        assert text == final.output_text == whole.output_text
    # Stored by the worker that finished it, under the id the client has: a chain finds it.
    stored = openai_client.responses.retrieve(final.id)
    assert [item.id for item in stored.output] == [item.id for item in final.output]
    chained = openai_client.responses.create(
        model=door.model, max_output_tokens=4, previous_response_id=final.id, input="Go on."
    )
    assert chained.previous_response_id == final.id
