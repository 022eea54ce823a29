"""The store of responses on its own: bounds (count, bytes), a restart's scan, bad files."""

from __future__ import annotations

import gzip
import os
import time

from server.api.responses.background import as_polled
from server.api.responses.history import page, with_ids
from server.api.responses.store import SUFFIX, ResponseStore


def response(n: int, text: str = "hi") -> dict:
    output = [{"type": "message", "id": f"msg_{n}", "role": "assistant", "content": text}]
    return {"id": f"resp_{n:04d}", "object": "response", "output": output}


def put(store: ResponseStore, n: int, text: str = "hi") -> None:
    store.put(response(n, text), [{"id": f"m{n}"}])
    # Modification times order a restart's scan: keep them apart on coarse clocks.
    path = store.folder / f"resp_{n:04d}{SUFFIX}"
    os.utime(path, (time.time() + n, time.time() + n))


def test_a_record_round_trips_and_deletes(tmp_path):
    store = ResponseStore(tmp_path, max_count=10, max_bytes=1 << 20)
    put(store, 1)
    record = store.get("resp_0001")
    assert record is not None
    assert record["response"] == response(1) and record["input_items"] == [{"id": "m1"}]
    assert store.delete("resp_0001") and store.get("resp_0001") is None
    assert not store.delete("resp_0001")


def test_the_oldest_go_first_past_the_count(tmp_path):
    store = ResponseStore(tmp_path, max_count=2, max_bytes=1 << 20)
    for n in range(1, 4):
        put(store, n)
    assert store.get("resp_0001") is None
    assert store.get("resp_0002") is not None and store.get("resp_0003") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"resp_0002{SUFFIX}",
        f"resp_0003{SUFFIX}",
    ]


def test_the_oldest_go_first_past_the_bytes(tmp_path):
    noise = os.urandom(6000).hex()  # hex compresses to half: ~6.5 KB a file
    store = ResponseStore(tmp_path, max_count=100, max_bytes=14_000)
    for n in range(1, 4):
        put(store, n, noise)
    assert store.get("resp_0001") is None and store.get("resp_0003") is not None
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 14_000


def test_a_restart_finds_the_records_and_keeps_the_bounds_in_age_order(tmp_path):
    store = ResponseStore(tmp_path, max_count=10, max_bytes=1 << 20)
    for n in range(1, 5):
        put(store, n)
    again = ResponseStore(tmp_path, max_count=2, max_bytes=1 << 20)
    assert [again.get(f"resp_{n:04d}") is not None for n in range(1, 5)] == [
        False,
        False,
        True,
        True,
    ]
    # Storing turned off keeps what is there.
    off = ResponseStore(tmp_path, max_count=0, max_bytes=1 << 20)
    assert not off.enabled and off.get("resp_0004") is not None
    off.put(response(9), [])
    assert off.get("resp_0009") is None


def test_bad_files_and_foreign_ids_are_misses(tmp_path):
    store = ResponseStore(tmp_path, max_count=10, max_bytes=1 << 20)
    (tmp_path / f"resp_0007{SUFFIX}").write_bytes(b"not gzip")
    (tmp_path / f"resp_0008{SUFFIX}").write_bytes(gzip.compress(b'{"format": 99}'))
    assert store.get("resp_0007") is None and store.get("resp_0008") is None
    # An id never names a path outside the folder.
    assert store.get("resp_../../etc/passwd") is None and store.get("x") is None
    assert not store.delete("../resp_0007")


def test_items_get_ids_and_pages_follow_openai():
    items = with_ids(["skip", {"role": "user", "content": "a"}, {"type": "function_call"}])
    assert items[0] == "skip"  # not an object: left for the request's own 400
    assert items[1]["id"].startswith("msg_") and items[1]["type"] == "message"
    assert items[1]["content"] == [{"type": "input_text", "text": "a"}]
    assert items[2]["id"].startswith("fc_")
    listed = [{"id": f"i{n}"} for n in range(5)]
    first = page(listed, None, 2, "desc")
    assert [i["id"] for i in first["data"]] == ["i4", "i3"] and first["has_more"]
    assert (first["first_id"], first["last_id"]) == ("i4", "i3")
    last = page(listed, "i1", 2, "desc")
    assert [i["id"] for i in last["data"]] == ["i0"] and not last["has_more"]
    assert [i["id"] for i in page(listed, "i2", 10, "asc")["data"]] == ["i3", "i4"]


def test_an_unfinished_background_run_no_worker_runs_reads_as_failed():
    queued = {"id": "resp_1", "status": "queued", "error": None}
    assert as_polled(queued, running=True) == queued
    failed = as_polled(queued, running=False)
    assert failed["status"] == "failed" and "stopped" in failed["error"]["message"]
    done = {"id": "resp_1", "status": "completed"}
    assert as_polled(done, running=False) is done


def test_a_held_record_is_found_before_it_is_written_and_the_newest_lands(tmp_path):
    store = ResponseStore(tmp_path, max_count=10, max_bytes=1 << 20)
    queued, done = {**response(1), "status": "queued"}, {**response(1), "status": "completed"}
    assert store.hold(queued, [])
    assert store.get("resp_0001")["response"]["status"] == "queued"  # nothing on disk yet
    assert list(tmp_path.iterdir()) == []
    store.hold(done, [])  # a background run's end, held before the queued record's write ran
    store.write("resp_0001")
    store.write("resp_0001")  # the second write finds nothing left to write
    assert ResponseStore(tmp_path, 10, 1 << 20).get("resp_0001")["response"]["status"] == (
        "completed"
    )


def test_a_record_deleted_before_its_write_stays_deleted(tmp_path):
    store = ResponseStore(tmp_path, max_count=10, max_bytes=1 << 20)
    store.hold(response(1), [])
    assert store.delete("resp_0001")
    store.write("resp_0001")
    assert store.get("resp_0001") is None and list(tmp_path.iterdir()) == []


def test_the_count_bound_holds_at_once_when_an_older_records_write_lags(tmp_path):
    """Each record is written in a thread after its reply is sent: a client's next requests can
    be held before an earlier one's write ran, and the oldest must still go first, at once."""
    store = ResponseStore(tmp_path, max_count=2, max_bytes=1 << 20)
    for n in (1, 2, 3):
        assert store.hold(response(n), [])
    store.write("resp_0002")  # written out of order: the first one's write lags
    assert store.get("resp_0001") is None
    assert store.get("resp_0002") is not None and store.get("resp_0003") is not None
    for n in (3, 1):
        store.write(f"resp_{n:04d}")  # the evicted one's late write writes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"resp_0002{SUFFIX}",
        f"resp_0003{SUFFIX}",
    ]
    put(store, 4)  # past the count again: the oldest written one goes
    assert [store.get(f"resp_{n:04d}") is not None for n in (2, 3, 4)] == [False, True, True]
