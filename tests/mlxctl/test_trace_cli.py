"""`mlxctl trace on|off|ls|show` in-process: traces written by the worker's own store, read back
through the CLI (a live switch on a running service is in tests/e2e/test_trace_e2e.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mlxctl import config, exit_codes
from mlxctl.cli import register_commands
from server.api.traces.record import Exchange
from server.api.traces.store import TraceStore

app = register_commands()


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("MLXCTL_HOME", str(folder))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "140")
    return folder


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def write_traces(folder) -> None:
    store = TraceStore(folder, max_bytes=10**6, max_files=100)
    plain = Exchange("aaaa00000001", "POST", "/v1/chat/completions", "", [], started_at=1.8e9)
    plain.request_body += b'{"messages": [{"role": "user", "content": "hi"}]}'
    plain.status = 200
    plain.response_headers = [("content-type", "application/json")]
    plain.chunks.append((0.5, b'{"choices": [{"message": {"content": "hello"}}]}'))
    streamed = Exchange("bbbb00000002", "POST", "/v1/messages", "", [], started_at=1.8e9 + 60)
    streamed.request_body += b'{"stream": true}'
    streamed.status = 200
    streamed.response_headers = [("content-type", "text/event-stream; charset=utf-8")]
    streamed.chunks += [
        (0.1, b'event: message_start\ndata: {"type": "message_start"}\n\n'),
        (0.2, b'event: message_stop\ndata: {"type": "message_stop"}\n\n'),
    ]
    for exchange in (plain, streamed):
        store.submit(exchange)
    store.close()


def test_ls_lists_the_newest_first_and_as_json(home):
    assert "no traces yet" in run("trace", "ls").output
    write_traces(home / "traces")
    listed = run("trace", "ls")
    assert listed.exit_code == 0, listed.output
    table = listed.output
    assert table.index("bbbb00000002") < table.index("aaaa00000001")
    assert "POST /v1/messages" in table and "stream, 2 events" in table
    assert "2 of 2 traces shown" in table
    rows = json.loads(run("trace", "ls", "--json", "-n", "1").output)
    assert [(r["id"], r["status"], r["stream"]) for r in rows] == [("bbbb00000002", 200, True)]


def test_show_prints_a_stream_event_by_event_and_a_reply_as_json(home):
    write_traces(home / "traces")
    shown = run("trace", "show", "bbbb")
    assert shown.exit_code == 0, shown.output
    assert "trace bbbb00000002: POST /v1/messages -> 200, stream of 2 events" in shown.output
    assert '   0.100  message_start  {"type": "message_start"}' in shown.output
    doc = json.loads(run("trace", "show", "aaaa00000001", "--json").output)
    assert doc["response"]["body"]["choices"][0]["message"]["content"] == "hello"
    assert doc["request"]["body"]["messages"][0]["content"] == "hi"


def test_show_of_an_unknown_or_ambiguous_id_is_one_line_and_a_hint(home):
    write_traces(home / "traces")
    missing = run("trace", "show", "cccc")
    assert missing.exit_code == exit_codes.FAILURE
    assert "no trace 'cccc'" in missing.output and "mlxctl trace ls" in missing.output
    both = run("trace", "show", "")
    assert both.exit_code == exit_codes.FAILURE and "2 traces start with" in both.output


def test_a_folder_of_a_standalone_worker_is_read_with_dir(home, tmp_path):
    write_traces(tmp_path / "elsewhere")
    rows = json.loads(run("trace", "ls", "--dir", str(tmp_path / "elsewhere"), "--json").output)
    assert len(rows) == 2


def test_on_and_off_without_a_worker_are_kept_for_the_next_start(home):
    on = run("trace", "on")
    assert on.exit_code == 0, on.output
    assert "request traces on in the config" in on.output and "no worker runs" in on.output
    assert config.load()["trace.enabled"] is True
    options = config.worker_options(config.load())
    assert options["trace_dir"] == home / "traces"
    off = json.loads(run("trace", "off", "--json").output)
    assert off == {
        "enabled": False,
        "live": False,
        "folder": str(home / "traces"),
        "note": "no worker runs: the next start records nothing",
    }
    assert config.worker_options(config.load())["trace_dir"] is None
