"""The trace folder's bounds and the record's redaction, on exchanges built by hand."""

from __future__ import annotations

import json

from server.api.traces.record import Exchange, encode, sse_events
from server.api.traces.store import TraceStore


def exchange(index: int, body: bytes = b"") -> Exchange:
    ex = Exchange(
        id=f"{index:012x}",
        method="POST",
        path="/v1/messages",
        query="",
        request_headers=[("content-type", "application/json"), ("x-api-key", "sk-abcdef123")],
        started_at=1_800_000_000 + index,
    )
    ex.request_body += body or json.dumps({"n": index, "pad": "x" * 500}).encode()
    ex.status = 200
    ex.response_headers = [("content-type", "application/json")]
    ex.chunks.append((0.01, b'{"ok": true}'))
    return ex


def test_the_oldest_traces_go_first_past_the_byte_bound(tmp_path):
    one = len(encode(exchange(0), set()))
    store = TraceStore(tmp_path, max_bytes=one * 3 + 10, max_files=100)
    for index in range(8):
        store.submit(exchange(index))
    store.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[-1].endswith(f"-{7:012x}.json")
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= one * 3 + 10
    assert store.status()["files"] == 3 and store.written == 8


def test_a_trace_over_the_bound_on_its_own_is_skipped_and_kept_out(tmp_path):
    store = TraceStore(tmp_path, max_bytes=2000, max_files=100)
    store.submit(exchange(1))
    store.submit(exchange(2, body=b'{"big": "' + b"y" * 5000 + b'"}'))
    store.close()
    assert [p.name.split("-")[-1] for p in tmp_path.iterdir()] == [f"{1:012x}.json"]
    assert store.skipped == 1


def test_off_by_default_and_on_into_the_homes_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXCTL_HOME", str(tmp_path))
    store = TraceStore(None, max_bytes=10**6, max_files=10)
    store.submit(exchange(1))
    assert store.status()["enabled"] is False and not (tmp_path / "traces").exists()
    store.set_enabled(True)
    store.submit(exchange(2))
    store.close()
    assert [p.name.split("-")[-1] for p in (tmp_path / "traces").iterdir()] == [f"{2:012x}.json"]


def test_keys_are_scrubbed_from_headers_query_and_text(tmp_path):
    ex = exchange(1, body=json.dumps({"echo": "my key is sk-abcdef123"}).encode())
    ex.query = "beta=true&api_key=sk-query-456"
    ex.request_headers.append(("authorization", "Bearer tok-987654"))
    ex.chunks = [(0.1, b'{"said": "tok-987654 and worker-key-000"}')]
    text = encode(ex, {"worker-key-000"}).decode()
    for secret in ("sk-abcdef123", "sk-query-456", "tok-987654", "worker-key-000"):
        assert secret not in text
    doc = json.loads(text)
    assert doc["request"]["query"] == "beta=true&api_key=%5Bredacted%5D"
    assert doc["request"]["headers"]["authorization"] == "[redacted]"
    assert doc["request"]["body"] == {"echo": "my key is [redacted]"}


def test_a_stream_is_split_into_events_as_sent():
    chunks = [
        (0.1, b': ping\n\nevent: message_start\ndata: {"a": 1}\n'),
        (0.2, b"\nevent: message_stop\ndata: {}\n\n"),
        (0.3, b"data: [DONE]\n\n"),
    ]
    assert sse_events(chunks) == [
        {"t": 0.1, "comment": "ping"},
        {"t": 0.2, "event": "message_start", "data": {"a": 1}},
        {"t": 0.2, "event": "message_stop", "data": {}},
        {"t": 0.3, "data": "[DONE]"},
    ]
